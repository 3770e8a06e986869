"""The lean LM head: per-token log-probabilities scored at the completion positions only, on every device.

TRL 1.16 patches the model's forward with a fused LM head (`trl.trainer.utils.add_fused_lm_head`): the logits are
never materialised whole, a `[tokens, vocabulary chunk]` tile at a time is folded into running log-sum-exp
statistics, and the backward recomputes each tile. Two of its choices depend on the device:

- on CUDA/XPU (Triton) it scores only the positions whose label is not -100 (the completion tokens); elsewhere it
  scores every position of the padded batch, prompt and padding included, and masks the result afterwards;
- without Triton the tile is folded by plain torch code that multiplies by the logit scale and the inverse
  temperature even when both are 1.0, allocates a fresh tensor for each intermediate, and builds full-size masks
  for the top-1 metric.

On a 262k-token vocabulary (Gemma 3) that CPU path is most of a training step. `use_lean_head(model)` keeps TRL's
forward as it is (the backbone call, the logit scale and soft-capping it reads from the config, the masks, the
outputs) and changes exactly those two choices: positions are compacted to the scored ones on every device, and
off Triton the tiles go through `LeanLogProbs`, which computes the same quantities:

- `log_probs` = z_target - logsumexp(z), with z = softcap(h @ W^T + b, scale) / temperature;
- `entropy` = log S - X / S with S = sum_j exp(z_j - m), X = sum_j exp(z_j - m)(z_j - m), m the running max;
- `mean_logits` = mean_j z_j; `is_top1` = argmax_j z_j == target (the first maximum, as TRL's);
- the backward: dL/dz_j = g (1[j = target] - p_j) (- g_H p_j (log p_j + H) when the entropy has a gradient).

Each tile is worked in place in one preallocated buffer; steps that multiply by 1.0 are skipped; the metrics
share the tile's one max/argmax pass; the gradient buffers are written by the first product instead of being
zeroed and then accumulated. On Triton devices TRL's own kernel does the work (only the compacting is shared).
Log-probabilities and gradients equal TRL's to float rounding (tests/train/test_lean_head.py).

Within `head_gradient_into_grad()` (a training step of one process, see `accumulate_tied_gradient`), the weight's
gradient is added straight into the parameter's `.grad` instead of being handed back to autograd. For a weight
shared with the input embedding (Gemma) autograd would otherwise add the head's gradient and the embedding's in a
new [vocabulary x hidden] tensor before `.grad`: 640 MiB more near the end of every Gemma 3 270M backward, the peak
of a full fine-tune.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import torch

# One tile is at most TOKEN_TILE positions x VOCAB_TILE vocabulary entries (32 MiB in float32). Smaller tiles stay
# in cache but multiply the number of torch calls, each a synchronisation of the intra-op threads; on a busy 2-core
# machine (threads waiting on each other) 1024 x 8192 was 2-3x faster per step than 256 x 2048.
TOKEN_TILE = 1024
VOCAB_TILE = 8192
# A forward that will be differentiated keeps its logits (float32) for the backward when they fit in this many bytes
# and one token tile: the backward then skips recomputing them, one of its three matrix products. 512 MiB holds 512
# positions of a 262k-token vocabulary; above it the backward recomputes, as TRL's does.
KEEP_LOGITS_BYTES = 512 * 2**20

# What TRL 1.16's DPOTrainer asks of the policy's fused head (dpo_trainer.py, without WPO's log_sum_sq_probs).
TRL_POLICY_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")

# The module globals TRL 1.16's fused forward reads to choose the compact path and the kernel.
_TRL_KERNEL_NAME = "_ChunkedLogProbFunction"
_TRL_COMPACT_NAME = "_use_triton"


def use_lean_head(model: Any) -> bool:
    """Give `model`'s fused forward (patched by TRL's trainer) the compact path and the lean kernel.

    TRL's `_fused_forward` is copied with two names of its globals rebound, for this model only: the plain TRL
    trainers in the same process keep TRL's own behaviour. Returns False (and changes nothing) when the model has no
    TRL fused forward, e.g. a Liger-patched one.
    """
    fused = getattr(getattr(model, "forward", None), "__func__", None)
    code = getattr(fused, "__code__", None)
    if code is None or not {_TRL_KERNEL_NAME, _TRL_COMPACT_NAME} <= set(code.co_names):
        return False
    namespace = {**fused.__globals__, _TRL_KERNEL_NAME: LeanHeadDispatch, _TRL_COMPACT_NAME: _always_compact}
    lean = types.FunctionType(code, namespace, fused.__name__, fused.__defaults__, fused.__closure__)
    lean.__kwdefaults__ = fused.__kwdefaults__
    lean.__dict__.update(fused.__dict__)  # keeps __wrapped__: generate() reads the model's signature through it
    lean.trl_function = getattr(fused, "trl_function", fused)  # TRL's own, for benchmarks that switch back
    model.forward = types.MethodType(lean, model)
    return True


def _always_compact(device: torch.device) -> bool:
    return True


def _triton_device(device: torch.device) -> bool:
    from trl.kernels.chunked_logprob import _use_triton

    return _use_triton(device)


class LeanHeadDispatch:
    """Stands where TRL's forward calls `_ChunkedLogProbFunction.apply`: TRL's kernel on Triton devices, else ours."""

    log_probs_only = False  # set by `log_probs_only()` around reference passes, whose metrics nobody reads
    into_grad = False  # set by `head_gradient_into_grad()` around training steps

    @staticmethod
    def apply(hidden: torch.Tensor, *args: Any) -> tuple[torch.Tensor | None, ...]:
        if LeanHeadDispatch.log_probs_only:
            args = (*args[:-1], ("log_probs",))  # `outputs`, TRL's last argument
        if _triton_device(hidden.device):
            from trl.kernels import ChunkedLogProbFunction

            return ChunkedLogProbFunction.apply(hidden, *args)
        return LeanLogProbs.apply(hidden, *args, torch.is_grad_enabled())


@contextlib.contextmanager
def head_gradient_into_grad() -> Iterator[None]:
    """Within it, a forward whose backward will be the training step's own adds the LM head weight's gradient into
    `weight.grad` (see the module's docstring). Only around `loss.backward()`-style steps: a `torch.autograd.grad`
    call would not find the head's share in its result."""
    LeanHeadDispatch.into_grad = True
    try:
        yield
    finally:
        LeanHeadDispatch.into_grad = False


def accumulate_tied_gradient(model: Any) -> bool:
    """Let the tied input embedding of `model` add its gradient into `.grad` in place; True where it did.

    A weight shared by the LM head and the input embedding gets two gradients per step. With the head's written
    into `.grad` (`head_gradient_into_grad`), the embedding's is the other one: dense, it is a second
    [vocabulary x hidden] tensor of zeros with a row per token of the batch added; sparse, it is those rows alone,
    added into `.grad` by autograd in place. The sum is the same up to the order in which a repeated token's rows
    are added. Only for a trained float32 weight that is both (an untied embedding would end with a sparse `.grad`,
    which AdamW refuses), and only in one process: DDP expects a sparse gradient of a sparse embedding, DeepSpeed
    and FSDP partition the gradients.
    """
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    if not isinstance(embedding, torch.nn.Embedding) or embedding.sparse or head is None:
        return False
    weight = embedding.weight
    if getattr(head, "weight", None) is not weight or not weight.requires_grad or weight.dtype != torch.float32:
        return False
    embedding.sparse = True
    # A forward that skips the fused head (full logits, e.g. for label smoothing) leaves the sparse rows alone.
    weight.register_post_accumulate_grad_hook(_densify_gradient)
    return True


def _densify_gradient(weight: torch.Tensor) -> None:
    if weight.grad is not None and weight.grad.is_sparse:
        weight.grad = weight.grad.to_dense()


@contextlib.contextmanager
def log_probs_only() -> Iterator[None]:
    """Within it, the lean head computes log-probabilities only: for reference passes (TRL reads `.log_probs` of
    them), which with LoRA run the policy's own forward, entropy and top-1 included, with the adapter off."""
    LeanHeadDispatch.log_probs_only = True
    try:
        yield
    finally:
        LeanHeadDispatch.log_probs_only = False


class _Tiles:
    """The logits of one `[tokens, vocabulary]` tile, transformed as TRL's `_torch_transform`, in a reused buffer."""

    def __init__(self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, ctx: dict) -> None:
        self.weight, self.bias = weight, bias
        self.compute_dtype = ctx["compute_dtype"]
        self.scale, self.softcap, self.inv_t = ctx["logit_scale"], ctx["softcap"], ctx["inv_t"]
        rows, cols = min(hidden.shape[0], TOKEN_TILE), min(weight.shape[0], VOCAB_TILE)
        self.buffer = torch.empty((rows, cols), device=hidden.device, dtype=torch.float32)
        self.product = (
            None
            if self.compute_dtype == torch.float32
            else torch.empty((rows, cols), device=hidden.device, dtype=self.compute_dtype)
        )
        self.tanh = torch.empty_like(self.buffer) if self.softcap is not None else None

    def logits(self, hidden_rows: torch.Tensor, start: int, end: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """z for rows x [start, end), in `out` or the reused buffer; with soft-capping, `self.tanh` keeps
        t = tanh(scale * y / cap) for the backward."""
        n, width = hidden_rows.shape[0], end - start
        tile = self.buffer[:n, :width] if out is None else out
        product = tile if self.compute_dtype == torch.float32 else self.product[:n, :width]
        torch.mm(hidden_rows, self.weight[start:end].to(self.compute_dtype).t(), out=product)
        if self.bias is not None:
            product.add_(self.bias[start:end].to(self.compute_dtype))
        if product is not tile:
            tile.copy_(product)
        if self.scale != 1.0:
            tile.mul_(self.scale)
        if self.softcap is not None:
            tanh = self.tanh[:n, :width]
            torch.tanh(tile.div_(self.softcap), out=tanh)
            tile.copy_(tanh).mul_(self.softcap)
        if self.inv_t != 1.0:
            tile.mul_(self.inv_t)
        return tile


class LeanLogProbs(torch.autograd.Function):
    """`trl.kernels.ChunkedLogProbFunction` (same arguments, same outputs) for devices without Triton."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,  # [N, H], the scored positions only
        weight: torch.Tensor,  # [V, H]
        bias: torch.Tensor | None,  # [V]
        targets: torch.Tensor,  # [N]
        temperature: float,
        chunk_size: int,  # TRL's vocabulary chunk; the tiles here have their own sizes
        final_logit_softcapping: float | None = None,
        logit_scale: float = 1.0,
        outputs: tuple[str, ...] = ("log_probs",),
        keep_logits: bool = False,  # keep the logits for the backward instead of recomputing them (see KEEP_LOGITS)
    ) -> tuple[torch.Tensor | None, ...]:
        ctx.set_materialize_grads(False)
        device, (n_tokens, vocab) = hidden.device, (hidden.shape[0], weight.shape[0])
        keep_logits = keep_logits and n_tokens <= TOKEN_TILE and n_tokens * vocab * 4 <= KEEP_LOGITS_BYTES
        autocast = torch.is_autocast_enabled(device.type)
        settings = {
            "compute_dtype": torch.get_autocast_dtype(device.type) if autocast else hidden.dtype,
            "logit_scale": float(logit_scale),
            "softcap": final_logit_softcapping,
            "inv_t": 1.0 / temperature,
        }
        want_entropy, want_mean, want_top1 = ("entropy" in outputs, "mean_logits" in outputs, "is_top1" in outputs)
        want_sq = "log_sum_sq_probs" in outputs

        running_max = torch.empty(n_tokens, device=device, dtype=torch.float32)
        sum_exp = torch.empty_like(running_max)
        centred = torch.empty_like(running_max) if want_entropy else None  # X above
        sum_sq = torch.empty_like(running_max) if want_sq else None
        z_sum = torch.zeros_like(running_max) if want_mean else None
        argmax = torch.empty(n_tokens, device=device, dtype=torch.long) if want_top1 else None
        target_logit = torch.empty_like(running_max)
        tiles = _Tiles(hidden, weight, bias, settings)
        kept: list[torch.Tensor | None] = []
        exp_buffer = torch.empty_like(tiles.buffer) if (want_entropy or want_sq or keep_logits) else None

        for row_start in range(0, n_tokens, TOKEN_TILE):
            rows = slice(row_start, min(row_start + TOKEN_TILE, n_tokens))
            hidden_rows = hidden[rows].to(settings["compute_dtype"])
            row_targets = targets[rows]
            m, s = running_max[rows], sum_exp[rows]
            for start in range(0, vocab, VOCAB_TILE):
                end = min(start + VOCAB_TILE, vocab)
                out = None
                if keep_logits:
                    out = torch.empty((rows.stop - rows.start, end - start), device=device, dtype=torch.float32)
                    kept.append(out)
                tile = tiles.logits(hidden_rows, start, end, out)
                if want_mean:
                    z_sum[rows] += tile.sum(-1)
                here = (row_targets >= start) & (row_targets < end)
                local = (row_targets - start).clamp_(0, end - start - 1)
                picked = tile.gather(1, local.unsqueeze(1)).squeeze(1)
                target_logit[rows] = torch.where(here, picked, target_logit[rows]) if start else picked
                if want_top1:
                    tile_max, tile_arg = tile.max(-1)
                else:
                    tile_max, tile_arg = tile.amax(-1), None
                first = start == 0
                new_m = tile_max if first else torch.maximum(m, tile_max)
                if want_top1:
                    # strictly greater: on a tie the earlier (first) maximum stays, as argmax and TRL's kernel do
                    tile_arg += start
                    argmax[rows] = tile_arg if first else torch.where(tile_max > m, tile_arg, argmax[rows])
                # d = z - m', in place unless the logits are kept
                d = tile.sub_(new_m.unsqueeze(1)) if out is None else torch.sub(tile, new_m.unsqueeze(1), out=tiles.buffer[: tile.shape[0], : tile.shape[1]])  # fmt: skip
                if exp_buffer is None:
                    chunk_sum = d.exp_().sum(-1)
                else:
                    e = torch.exp(d, out=exp_buffer[: d.shape[0], : d.shape[1]])
                    chunk_sum = e.sum(-1)
                    if want_entropy:
                        chunk_centred = torch.einsum("ij,ij->i", e, d)
                    if want_sq:
                        chunk_sq = e.square_().sum(-1)
                if first:
                    s.copy_(chunk_sum)
                    if want_entropy:
                        centred[rows] = chunk_centred
                    if want_sq:
                        sum_sq[rows] = chunk_sq
                else:
                    shift = m - new_m  # <= 0
                    rescale = shift.exp()
                    if want_entropy:
                        # X' = r (X + (m - m') S) + X_tile: the earlier terms re-centred on the new max
                        centred[rows] = rescale * (centred[rows] + shift * s) + chunk_centred
                    if want_sq:
                        sum_sq[rows] = sum_sq[rows] * rescale * rescale + chunk_sq
                    s.mul_(rescale).add_(chunk_sum)
                m.copy_(new_m)

        log_z = running_max + sum_exp.log()
        log_probs = target_logit - log_z
        entropy = sum_exp.log() - centred / sum_exp if want_entropy else None
        log_sum_sq_probs = sum_sq.log() - 2 * sum_exp.log() if want_sq else None
        mean_logits = z_sum / vocab if want_mean else None
        is_top1 = argmax == targets if want_top1 else None

        ctx.save_for_backward(hidden, weight, bias, targets, log_z, log_z if entropy is None else entropy)
        ctx.settings = settings
        ctx.into_grad = LeanHeadDispatch.into_grad  # the backward checks that the weight takes it
        ctx.kept = kept or None  # used, and dropped tile by tile, by the first backward
        ctx.mark_non_differentiable(*(x for x in (log_sum_sq_probs, mean_logits, is_top1) if x is not None))
        return log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1

    @staticmethod
    def backward(ctx: Any, grad_log_probs: torch.Tensor | None, grad_entropy: torch.Tensor | None, *_: Any) -> tuple:
        from trl.trainer.utils import maybe_gather_lm_head_ctx

        hidden, weight, bias, targets, log_z, entropy = ctx.saved_tensors
        settings = ctx.settings
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        n_tokens = hidden.shape[0]
        with maybe_gather_lm_head_ctx(weight, bias):
            vocab = weight.shape[0]
            f32 = torch.float32
            grad_hidden = torch.empty(hidden.shape, device=hidden.device, dtype=f32) if needs_hidden else None
            # Into .grad: added to what an earlier micro-batch left there, or written into a fresh one.
            into_grad = needs_weight and ctx.into_grad and _takes_gradient_in_place(weight)
            adding = into_grad and weight.grad is not None
            if adding:
                grad_weight = weight.grad
            else:
                grad_weight = torch.empty(weight.shape, device=weight.device, dtype=f32) if needs_weight else None
            grad_bias = torch.zeros(bias.shape, device=bias.device, dtype=f32) if needs_bias else None
            tiles = _Tiles(hidden, weight, bias, settings)
            kept, ctx.kept = ctx.kept, None  # a second backward (retain_graph) recomputes
            g = grad_log_probs.float() if grad_log_probs is not None else None
            g_h = grad_entropy.float() if grad_entropy is not None else None
            for row_start in range(0, n_tokens, TOKEN_TILE):
                rows = slice(row_start, min(row_start + TOKEN_TILE, n_tokens))
                hidden_rows = hidden[rows].to(settings["compute_dtype"])
                hidden_f32 = hidden_rows.float()
                row_targets = targets[rows]
                for index, start in enumerate(range(0, vocab, VOCAB_TILE)):
                    end = min(start + VOCAB_TILE, vocab)
                    if kept is None:
                        tile = tiles.logits(hidden_rows, start, end)
                    else:
                        tile, kept[index] = kept[index], None
                        if tiles.softcap is not None:  # t = z / (cap / temperature), as logits() would leave it
                            torch.mul(tile, 1.0 / (tiles.softcap * tiles.inv_t), out=tiles.tanh[: tile.shape[0], : tile.shape[1]])  # fmt: skip
                    _logits_grad_in_place(tile, tiles, log_z[rows], entropy[rows], row_targets, start, end, g, g_h,
                                          rows)  # fmt: skip
                    weight_rows = weight[start:end].float()
                    if grad_hidden is not None:
                        if start == 0:
                            torch.mm(tile, weight_rows, out=grad_hidden[rows])
                        else:
                            grad_hidden[rows].addmm_(tile, weight_rows)
                    if grad_weight is not None:
                        if row_start == 0 and not adding:
                            torch.mm(tile.t(), hidden_f32, out=grad_weight[start:end])
                        else:
                            grad_weight[start:end].addmm_(tile.t(), hidden_f32)
                    if grad_bias is not None:
                        grad_bias[start:end] += tile.sum(0)
            if grad_weight is not None and n_tokens == 0 and not adding:
                grad_weight.zero_()
            if into_grad:
                if not adding:
                    weight.grad = grad_weight
                grad_weight = None  # autograd gets nothing to add for the head
        return (
            grad_hidden.to(hidden.dtype) if grad_hidden is not None else None,
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
            grad_bias.to(bias.dtype) if grad_bias is not None else None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        )


def _takes_gradient_in_place(weight: torch.Tensor) -> bool:
    """A float32 leaf whose `.grad` is absent or a plain dense float32 tensor of its shape."""
    if not (
        weight.is_leaf and weight.requires_grad and weight.dtype == torch.float32 and weight.layout == torch.strided
    ):
        return False
    grad = weight.grad
    return grad is None or (grad.layout == torch.strided and grad.dtype == torch.float32 and grad.is_contiguous()
                            and grad.shape == weight.shape)  # fmt: skip


def _logits_grad_in_place(
    tile: torch.Tensor,
    tiles: _Tiles,
    log_z: torch.Tensor,
    entropy: torch.Tensor,
    targets: torch.Tensor,
    start: int,
    end: int,
    g: torch.Tensor | None,
    g_h: torch.Tensor | None,
    rows: slice,
) -> None:
    """Turn the tile of logits z into dL/dy (y = h @ W^T + b, before scale, soft-cap and temperature), in place."""
    n = tile.shape[0]
    tile.sub_(log_z.unsqueeze(1))  # log p
    if g_h is not None:
        # d(entropy)/dz_j = -p_j (log p_j + H): computed here while log p is at hand, added after the log-prob term
        entropy_term = tile.exp() * (tile + entropy.unsqueeze(1)) * g_h[rows].unsqueeze(1)
    tile.exp_()  # p
    if g is not None:
        # g (1[j = target] - p_j)
        g_rows = g[rows]
        tile.mul_(-g_rows.unsqueeze(1))
        here = (targets >= start) & (targets < end)
        if bool(here.any()):
            index = here.nonzero().squeeze(1)
            tile[index, targets[index] - start] += g_rows[index]
    else:
        tile.zero_()
    if g_h is not None:
        tile.sub_(entropy_term)
    if tiles.inv_t != 1.0:
        tile.mul_(tiles.inv_t)
    if tiles.softcap is not None:
        t = tiles.tanh[:n, : end - start]
        tile.mul_(1 - t * t)
    if tiles.scale != 1.0:
        tile.mul_(tiles.scale)
