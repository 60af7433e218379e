"""YAML configs for the training side, validated on load so a typo fails in one clear line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from edge_lstm.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_FRACTIONS = {"train", "val", "test"}


class SplitConfig(_Strict):
    """How runs (never windows) are assigned to train/val/test: one of three ways.

    - fractions (the default): `{train, val, test}` shares of runs, stratified by each run's
      fault class (and kept whole per `data.group_column` when that is set);
    - `{column: NAME}`: a column of the logs says `train`, `val` or `test` for every reading of a
      run (one value per run);
    - `{file: PATH}`: a YAML or JSON file maps `train`/`val`/`test` to lists of run ids, and
      every run of the data is listed exactly once. A relative PATH is read from the working
      directory, like `data.path` (a config rebuilt from a checkpoint has no folder of its own).

    A dumped config holds only the keys of the way in use, so it loads back unchanged.
    """

    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.2, ge=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    column: str | None = Field(None, min_length=1, description="per-run split column")
    file: Path | None = Field(None, description="YAML/JSON file: split -> run ids")

    @property
    def mode(self) -> Literal["fractions", "column", "file"]:
        if self.column is not None:
            return "column"
        return "file" if self.file is not None else "fractions"

    @model_validator(mode="after")
    def _one_way(self) -> SplitConfig:
        if self.column is not None and self.file is not None:
            raise ValueError("give column or file, not both")
        fractions = sorted(self.model_fields_set & _FRACTIONS)
        if self.mode != "fractions" and fractions:
            raise ValueError(
                f"{'/'.join(fractions)} (fractions) and {self.mode} are two ways to split; keep one"
            )
        total = self.train + self.val + self.test
        if self.mode == "fractions" and abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1.0, got {total:g}")
        return self

    @model_serializer(mode="wrap")
    def _only_the_way_in_use(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        keep = _FRACTIONS if self.mode == "fractions" else {self.mode}
        return {k: v for k, v in handler(self).items() if k in keep}


class DataConfig(_Strict):
    """Where the sensor logs are and how readings become labelled windows.

    `group_column` names the device or asset of each run (one value per run): with fraction
    splits all runs of a group land in one split, so a test device is never seen in training;
    with column or file splits a group spanning two splits is an error.
    """

    path: Path
    run_column: str = "run_id"
    timestamp_column: str = "ts"
    label_column: str = "label"
    group_column: str | None = Field(
        None, min_length=1, description="device/asset of each run; a group stays in one split"
    )
    features: list[str] | None = Field(
        None, description="sensor columns in model order; null = every other numeric column"
    )
    normal_class: str = Field("normal", description="label of the no-fault class (index 0)")
    window: int = Field(60, ge=2, le=10_000)
    stride: int = Field(10, ge=1, description="window stride offline and hop when streaming")
    train_stride: int | None = Field(
        None,
        ge=1,
        description="stride of the training windows only (null = stride): a finer one gives "
        "more, time-shifted windows from few runs; validation and test keep `stride`",
    )
    split: SplitConfig = SplitConfig()
    nan_policy: Literal["error", "drop"] = "error"
    class_balance: Literal["weighted_loss", "balanced_sampler", "none"] = "weighted_loss"
    seed: int = 0

    @model_validator(mode="after")
    def _stride_fits(self) -> DataConfig:
        if self.stride > self.window:
            raise ValueError(f"stride ({self.stride}) must not exceed window ({self.window})")
        if self.train_stride is not None and self.train_stride > self.window:
            raise ValueError(
                f"train_stride ({self.train_stride}) must not exceed window ({self.window})"
            )
        if self.features is not None and len(set(self.features)) != len(self.features):
            raise ValueError("features lists a column twice")
        keys = list(self.metadata_columns.items())
        for i, (key, column) in enumerate(keys):
            for other, same in keys[:i]:
                if same == column:
                    raise ValueError(f"{other} and {key} both name column {column!r}")
        return self

    def stride_of(self, split: str) -> int:
        """The stride a split's windows are cut at: train_stride for train (when set), else
        stride."""
        return (self.train_stride or self.stride) if split == "train" else self.stride

    @property
    def metadata_columns(self) -> dict[str, str]:
        """Config key -> column of the logs that describes runs, not sensors (never a feature)."""
        keys = {
            "data.run_column": self.run_column,
            "data.timestamp_column": self.timestamp_column,
            "data.label_column": self.label_column,
        }
        if self.split.column is not None:
            keys["data.split.column"] = self.split.column
        if self.group_column is not None:
            keys["data.group_column"] = self.group_column
        return keys


class TeacherConfig(_Strict):
    """The offline teacher: bidirectional LSTM + attention pooling."""

    hidden_size: int = Field(128, ge=4, le=4096)
    layers: int = Field(2, ge=1, le=8)
    dropout: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="between LSTM layers and on the pooled vector (not on the window statistics)",
    )
    attention_size: int = Field(64, ge=4, le=4096)
    window_stats: bool = Field(
        False, description="feed the head the window's statistics beside the pooled sequence"
    )
    relative_input: bool = Field(
        False, description="the LSTM reads each reading minus the window's first"
    )
    head_hidden: int = Field(
        0, ge=0, le=4096, description="0 = linear head; else one ReLU layer this wide"
    )


class StudentConfig(_Strict):
    """The streamable student: causal GRU/LSTM classifying from its final hidden state."""

    cell: Literal["gru", "lstm"] = "gru"
    hidden_size: int = Field(32, ge=2, le=1024)
    layers: int = Field(1, ge=1, le=2)
    head_hidden: int = Field(0, ge=0, le=1024, description="0 = linear head")
    dropout: float = Field(0.0, ge=0, lt=1)
    window_stats: bool = Field(
        False,
        description="feed the head exact running window statistics (mean, log std, last − first, "
        "max, min per channel) beside the hidden state; streamed as a 'stats' state",
    )
    relative_input: bool = Field(
        False,
        description="the recurrent cell reads each reading minus the window's first (device "
        "offsets cancel; levels still reach the head through window_stats, which it needs)",
    )

    @model_validator(mode="after")
    def _relative_needs_stats(self) -> StudentConfig:
        if self.relative_input and not self.window_stats:
            raise ValueError(
                "relative_input needs window_stats: true (the window's first reading is kept "
                "in the statistics state, and the levels reach the head only through it)"
            )
        return self


class AugmentConfig(_Strict):
    """Per-window random calibration (gain, offset per channel) and reading noise, in units of
    the channel's training std; 0 = off (edge_lstm.training.augment)."""

    gain: float = Field(0.0, ge=0, le=1, description="std of the per-channel gain around 1")
    offset: float = Field(0.0, ge=0, le=5, description="std of the per-channel offset")
    noise: float = Field(0.0, ge=0, le=5, description="std of the per-reading noise")

    @property
    def active(self) -> bool:
        return bool(self.gain or self.offset or self.noise)


class TrainConfig(_Strict):
    """Optimiser, schedule, precision and stopping rules shared by teacher and student.

    `epochs` and `patience` decide how long a run trains, so two runs with the same seed train
    the same epochs on any machine; `max_minutes` is an optional wall-clock safety net (off by
    default) and a run it cuts says so (`stop_reason: "time budget"`).

    `batch_size` is per process: under torchrun the global batch is batch_size × WORLD_SIZE.
    `lr` is the learning rate of one process; `lr_scaling` says how `fit` rescales it for the
    larger global batch: `none` (default: the configured lr whatever the world size, so a
    config means the same optimiser everywhere), `linear` (lr × WORLD_SIZE, Goyal et al.) or
    `sqrt` (lr × √WORLD_SIZE, the rule usually suggested for Adam-type optimisers).

    `precision`: `fp32` (default); `bf16` autocasts forward and loss to bfloat16 on CPU or
    CUDA; `fp16` autocasts to float16 with a GradScaler, on CUDA only. Weights, optimiser state,
    validation and the saved model stay fp32 in every mode.
    """

    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65_536, description="per process (see lr_scaling)")
    lr: float = Field(2e-3, gt=0, lt=1)
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none", description="lr rescaling for the global batch under torchrun (× world size)"
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="autocast dtype of the forward pass; fp16 needs CUDA"
    )
    weight_decay: float = Field(1e-4, ge=0, lt=1)
    schedule: Literal["plateau", "cosine"] = "plateau"
    patience: int = Field(5, ge=1)
    clip_norm: float = Field(1.0, gt=0)
    label_smoothing: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="smooths the hard-label targets (and the KD loss's cross-entropy term); "
        "keeps validation loss honest",
    )
    seed: int = 0
    max_minutes: float | None = Field(
        None, gt=0, description="wall-clock safety net (null = off); epochs decide a run"
    )
    threads: int | None = Field(None, ge=1, description="torch intra-op threads")
    augment: AugmentConfig = AugmentConfig()


class DistillConfig(_Strict):
    """Hinton-style knowledge distillation: α·T²·KL + (1−α)·CE, against a hard-label control.

    The control is fair by construction: the hard-label student and the KD loss's CE term both
    smooth labels by `train.label_smoothing`, and both students train on the whole `train`
    budget (epochs, patience, lr, seed). One seed cannot tell distillation's gain from
    seed-to-seed noise, so `seeds` trains both students for the seeds train.seed + 0 … N−1 and
    the comparison table reports their spread and the paired difference KD − hard.
    """

    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)
    baseline: bool = Field(True, description="also train the student on hard labels only")
    seeds: int = Field(
        1, ge=1, le=100, description="train each student for seeds train.seed + 0 … N−1"
    )
    cache_teacher_logits: bool = True
    train: TrainConfig = TrainConfig()


class ExportConfig(_Strict):
    """ONNX export settings and the parity check run on every export."""

    opset: int = Field(17, ge=13, le=23)
    parity_tolerance: float = Field(1e-4, gt=0)
    parity_windows: int = Field(
        64,
        ge=1,
        description="windows in the stratified parity sample (test + validation), split "
        "evenly over the classes, at least one per class",
    )


class QuantizeConfig(_Strict):
    """int8 settings and the accuracy guard."""

    tolerance_points: float = Field(1.0, ge=0, description="max macro-F1 drop, in points")
    calibration_windows: int = Field(256, ge=1)


class Config(_Strict):
    """A whole edgelstm training config (configs/demo.yaml)."""

    data: DataConfig
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    export: ExportConfig = ExportConfig()
    quantize: QuantizeConfig = QuantizeConfig()

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> str:
        """The file this config came from, for error messages."""
        return str(self._source) if self._source else "<config>"


def _format_validation_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "<top level>"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling against configs/demo.yaml)"
    elif err["type"] == "missing":
        msg = "required key is missing"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{source}: {key}: {msg}{more}"


_NOT_A_MAPPING = "expected a mapping at the top level"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping, as a dict.

    Raises ConfigError naming the file when it is missing, is not valid YAML, or holds
    something other than a mapping (an empty file included).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        # PyYAML's message spans lines (it quotes the offending line); errors are one line
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {_NOT_A_MAPPING}")
    return raw


def config_from_dict(raw: dict[str, Any], source: str | Path | None = None) -> Config:
    """Validates an already-parsed config; `source` names it in error messages."""
    label = str(source) if source else "<config>"
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: {_NOT_A_MAPPING}")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, label)) from None
    cfg._source = Path(source) if source else None
    return cfg


def load_config(path: str | Path) -> Config:
    """Reads and validates a YAML config; raises ConfigError naming the file and key."""
    return config_from_dict(read_yaml(path), Path(path))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """JSON-ready dict, saved beside checkpoints so a run can be reproduced."""
    return cfg.model_dump(mode="json")
