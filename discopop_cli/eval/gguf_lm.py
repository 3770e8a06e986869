"""lm-eval's `gguf` backend against llama-cpp-python's server: generation tasks only.

lm-eval scores a GGUF's log-likelihoods from `/v1/completions` with `echo` and `logprobs`. llama-cpp-python 0.3.36's
server returns echoed prompt log-probs that do not match the model: on SmolLM2-135M-Instruct (its Q4_1 GGUF), for
"Question: What is the capital of France?\\nAnswer: Paris" it gives ' France' -14.9 and ':' -11.8 where transformers,
on the same de-quantized weights, gives -1.2 and -0.01; lm-eval also drops the continuation's last echoed token
(it expects the generated one there), so a one-token answer scores 0. A multiple-choice score would be wrong
without a sign of it, so log-likelihood tasks are refused with the reason; generation tasks (`generate_until`) run.
"""

from __future__ import annotations

from typing import Any

REASON = (
    "llama-cpp-python's server returns echoed prompt log-probs that do not match the model, so lm-eval's "
    "log-likelihood scores of a GGUF would be wrong; score the model folder it was exported from, or pick a "
    "generation task"
)


def gguf_lm(base_url: str) -> Any:
    """lm-eval's GGUFLM for a llama.cpp server at `base_url`, refusing log-likelihood requests with REASON."""
    from lm_eval.models.gguf import GGUFLM

    class LlamaCppServerLM(GGUFLM):
        def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            raise NotImplementedError(REASON)

        def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
            raise NotImplementedError(REASON)

    return LlamaCppServerLM(base_url=base_url)
