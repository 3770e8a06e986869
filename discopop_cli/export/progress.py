"""Rich progress over the tensors while converting (and while llama.cpp quantizes), on stderr."""

from __future__ import annotations

from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from discopop_cli.core.console import err


class ExportProgress:
    """One bar per stage, counted in tensors; `advance` is the callback the converter and quantizer report to."""

    def __init__(self, *, quantizing: bool) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tensors"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {"converting": self._progress.add_task("converting", total=None)}
        if quantizing:
            self._tasks["quantizing"] = self._progress.add_task("quantizing", total=None)

    def advance(self, stage: str, done: int, total: int) -> None:
        self._progress.update(self._tasks[stage], completed=done, total=total)

    def __enter__(self) -> ExportProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._progress.stop()
