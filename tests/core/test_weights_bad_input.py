"""One safetensors reader for every command: a header that lies (offsets, length, shapes), a weights file that is a
symlink to itself, an index naming a missing shard or a file outside the folder, all refused in one line naming the
file and the tensor, by merge, export, training, eval prefs and eval judge alike, before anything is written."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bad_input import (
    ALIGN,
    EMPTY_SAFETENSORS,
    PAIRS,
    SFT,
    TINY,
    Case,
    case,
    check_case_ids,
    check_refused,
    jsonl,
    lora_adapter,
    lying_offsets,
    recipe,
    rewrite_header,
    safetensors_bytes,
)

WEIGHTS = "model/model.safetensors"


def weights(change: Callable[[dict[str, Any]], None], folder: str = "model") -> Callable[[Path], None]:
    return lambda tmp: rewrite_header(tmp / folder / "model.safetensors", change)


def huge_header(tmp: Path, folder: str = "model") -> None:
    path = tmp / folder / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes((1 << 62).to_bytes(8, "little") + raw[8:])


def loop(folder: str = "model") -> Callable[[Path], None]:
    def build(tmp: Path) -> None:
        path = tmp / folder / "model.safetensors"
        path.unlink()
        os.symlink(path, path)  # a link to itself

    return build


def missing_shard(tmp: Path) -> None:
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00002-of-00002.safetensors"}}
    (tmp / "model" / "model.safetensors.index.json").write_text(json.dumps(index))


def outside_shard(tmp: Path) -> None:
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "../elsewhere.safetensors"}}
    (tmp / "model" / "model.safetensors.index.json").write_text(json.dumps(index))


def wrong_shape(header: dict[str, Any]) -> None:
    header["model.norm.weight"]["shape"] = [128]  # 64 floats stored, 128 claimed


EXPORT = ["export", "{tmp}/model", "--gguf", "--quant", "f16"]
MERGE = ["merge", "{tmp}/adapter", "-o", "{tmp}/out", "--base", "{tmp}/model"]
ADAPTER = {"model": TINY}


def with_adapter(then: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
    def build(tmp: Path) -> None:
        lora_adapter(tmp / "adapter", base=str(tmp / "model"))
        if then is not None:
            then(tmp)

    return build


TRAIN = {"recipe.yaml": recipe("pairs.jsonl"), "pairs.jsonl": jsonl(PAIRS), "model": TINY}
OVERLAP = "overlap (at byte 0)"

CASES = [
    # ---- export ----------------------------------------------------------------------------------------------------
    case("export-offsets-all-lie", EXPORT, {"model": TINY}, 2, OVERLAP, build=weights(lying_offsets)),
    case(
        "export-header-length-2-62",
        EXPORT,
        {"model": TINY},
        2,
        f"{{tmp}}/{WEIGHTS} declares a header of 4611686018427387904 bytes, but the file holds",
        build=huge_header,
    ),
    case(
        "export-weights-link-to-itself",
        EXPORT,
        {"model": TINY},
        2,
        f"{{tmp}}/{WEIGHTS} cannot be read (Too many levels of symbolic links)",
        build=loop(),
    ),
    case(
        "export-index-names-a-missing-shard",
        EXPORT,
        {"model": TINY},
        2,
        "model.safetensors.index.json lists model-00002-of-00002.safetensors, which is missing from {tmp}/model",
        build=missing_shard,
    ),
    case(
        "export-index-names-a-file-outside",
        EXPORT,
        {"model": TINY},
        2,
        "names '../elsewhere.safetensors', a file outside {tmp}/model",
        build=outside_shard,
    ),
    case(
        "export-shape-disagrees-with-offsets",
        EXPORT,
        {"model": TINY},
        2,
        f"tensor 'model.norm.weight' of {{tmp}}/{WEIGHTS} is F32 [128], 512 bytes, but its data_offsets span 256",
        build=weights(wrong_shape),
    ),
    case(
        "export-tensor-past-the-end",
        EXPORT,
        {
            "model": TINY,
            WEIGHTS: safetensors_bytes({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"1234"),
        },
        2,
        f"tensor 'w' of {{tmp}}/{WEIGHTS} ends at byte 8 of the data, which holds 4 bytes",
    ),
    case(
        "export-header-not-json",
        EXPORT,
        {"model": TINY, WEIGHTS: safetensors_bytes({}, length=4) + b"\xff\xfe\x00\x01"},
        2,
        "has a header that is not JSON: the file is damaged or not safetensors",
    ),
    # ---- merge -----------------------------------------------------------------------------------------------------
    case("merge-base-offsets-all-lie", MERGE, ADAPTER, 2, OVERLAP, build=with_adapter(weights(lying_offsets))),
    case(
        "merge-base-link-to-itself",
        MERGE,
        ADAPTER,
        2,
        "Too many levels of symbolic links",
        build=with_adapter(loop()),
    ),
    case(
        "merge-base-index-names-a-missing-shard",
        MERGE,
        ADAPTER,
        2,
        "lists model-00002-of-00002.safetensors, which is missing",
        build=with_adapter(missing_shard),
    ),
    case(
        "merge-adapter-header-length-2-62",
        MERGE,
        ADAPTER,
        2,
        "{tmp}/adapter/adapter_model.safetensors declares a header of 4611686018427387904 bytes",
        build=with_adapter(
            lambda tmp: (tmp / "adapter" / "adapter_model.safetensors").write_bytes((1 << 62).to_bytes(8, "little"))
        ),
    ),
    # ---- training, eval --------------------------------------------------------------------------------------------
    case("align-model-offsets-all-lie", [*ALIGN, "--dry-run"], TRAIN, 2, OVERLAP, build=weights(lying_offsets)),
    case(
        "sft-model-index-names-a-missing-shard",
        [*SFT, "--dry-run"],
        {**TRAIN, "recipe.yaml": recipe("chat.jsonl"), "chat.jsonl": jsonl([{"messages": PAIRS[0]["chosen"]}])},
        2,
        "lists model-00002-of-00002.safetensors, which is missing",
        build=missing_shard,
    ),
    case(
        "eval-prefs-model-header-length-2-62",
        ["eval", "prefs", "{tmp}/model", "--data", "{tmp}/pairs.jsonl"],
        {"model": TINY, "pairs.jsonl": jsonl(PAIRS)},
        2,
        f"{{tmp}}/{WEIGHTS} declares a header of 4611686018427387904 bytes",
        build=huge_header,
    ),
    case(
        "judge-model-link-to-itself",
        [
            *("eval", "judge", "--models", "{tmp}/model,{tmp}/other", "--judge", "openai:j@http://127.0.0.1:9/v1"),
            *("--prompts", "{tmp}/prompts.jsonl", "-o", "{tmp}/run"),
        ],
        {
            "model": TINY,
            "other/config.json": "{}",
            "other/model.safetensors": EMPTY_SAFETENSORS,
            "prompts.jsonl": '{"prompt": "hi"}\n',
        },
        2,
        "Too many levels of symbolic links",
        build=loop(),
    ),
]


def test_every_reader_is_covered() -> None:
    check_case_ids(CASES, ("export", "merge"), at_least=4)
    assert {i.split("-")[0] for i in (p.id for p in CASES)} >= {"export", "merge", "align", "sft", "eval", "judge"}


@pytest.mark.parametrize("bad", CASES)
def test_refused(bad: Case, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_refused(bad, tmp_path, tiny_model_dir, monkeypatch)
