"""One object holds everything that decides a run: made by the CLI (or in Python), stored whole in the run folder
(settings.json) and in model.npz, read back by `evaluate` so that it rebuilds the same splits."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .backbones import DEFAULT_BACKBONE
from .errors import CnnCodesError


@dataclass(frozen=True)
class RunSettings:
    data: str | None = None  # folder, CIFAR-10 archive or its folder; None: CIFAR-10, downloaded into the cache
    backbone: str = DEFAULT_BACKBONE
    head: str = "auto"  # tuned, sgd, mlp or finetune; auto: decided per collection and machine (presets.choose_head)
    flip: bool = False
    normalize: str = "none"
    class_weight: str = "none"  # or "balanced": each class weighs the same in the loss, however many images it has
    test_percent: float = 20.0
    validation_percent: float = 20.0
    seed: int = 0
    eval_every: int = 100
    finetune_epochs: int | None = None  # --epochs of --finetune; None: the head's default (heads/finetune.py)
    cache_dir: str | None = None
    batch_size: int = 64
    threads: int | None = None
    device: str = "auto"
    precision: str = "auto"
    runtime: str = "auto"  # torch, onnx or onnx-int8 (ONNX Runtime, onnx_graphs); auto: codes.runtime.resolve_runtime
    engine: str = "local"
    address: str | None = None
    concurrency: int | None = None
    detect_unknown: bool = True  # learn when an image is like none of the classes (heads/unknown.py)

    def __post_init__(self):
        import os

        for name in ("data", "cache_dir"):  # paths are stored as absolute text: a run works from any folder
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, os.path.abspath(os.path.expanduser(str(value))))
        if self.finetune_epochs is not None and self.head not in ("finetune", "auto"):
            raise CnnCodesError(f"--epochs sets how long --finetune K trains; this run's head is {self.head}, which "
                                "chooses its own")
        if self.finetune_epochs is not None and self.finetune_epochs < 1:
            raise CnnCodesError(f"--epochs must be at least 1 (got {self.finetune_epochs})")

    def dataset_options(self) -> dict:
        return dict(cache_dir=self.cache_dir, test_percent=self.test_percent,
                    validation_percent=self.validation_percent, seed=self.seed)

    def load_data(self, given: bool = False):
        """The run's dataset; where its images were moved, a message that says how to point at them.
        given: the data path came from the user's --data now (a missing one is their typo, not a moved run)."""
        import os

        from .data.datasets import load_dataset

        if given and self.data is not None and not os.path.exists(self.data):
            raise CnnCodesError(f"--data {self.data} does not exist")
        if self.data is not None and not os.path.exists(self.data):
            raise CnnCodesError(f"the run's images were at {self.data}, which does not exist (any more): give --data "
                                "with where they are now")
        return load_dataset(self.data, **self.dataset_options())

    def resolved(self) -> "RunSettings":
        """These settings with the runtime decided for this machine (what a run records: its model must compute codes
        the way its training codes were computed, wherever it runs later)."""
        from .codes.runtime import resolve_runtime

        return self.but(runtime=resolve_runtime(self.runtime, self.device, self.precision))

    def extract_options(self) -> dict:
        return dict(cache_dir=self.cache_dir, batch_size=self.batch_size, threads=self.threads, device=self.device,
                    precision=self.precision, runtime=self.runtime, engine=self.engine, address=self.address,
                    concurrency=self.concurrency)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of_run(cls, run_dir) -> "RunSettings":
        """The settings a finished run folder was made with (its settings.json)."""
        import json
        from pathlib import Path

        if not Path(run_dir).is_dir():
            raise CnnCodesError(f"run folder {run_dir} does not exist")
        try:
            return cls.from_dict(json.loads((Path(run_dir) / "settings.json").read_text()))
        except FileNotFoundError:
            raise CnnCodesError(f"{run_dir} is not a finished run folder (it has no settings.json)") from None
        except (OSError, ValueError) as exc:
            raise CnnCodesError(f"{run_dir} is not a finished run folder ({exc})") from None

    @classmethod
    def from_dict(cls, values: dict) -> "RunSettings":
        values = {"runtime": "torch"} | values  # recorded before runs named their runtime: torch computed the codes
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise CnnCodesError(f"settings of another cnncodes version (unknown: {', '.join(sorted(unknown))})")
        return cls(**values)

    def but(self, **changes) -> "RunSettings":
        """A copy with some settings changed (None values are ignored: 'not given')."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
