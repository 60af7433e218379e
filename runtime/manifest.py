"""The deployment folder contract: manifest.json schema, loading, validation, sha256 checks.

The device side owns this schema; converters write manifests through `Manifest.save`.

`drift_reference` (optional; folders exported before it load with None) is kept inline rather
than as a sidecar file: it is about a thousand numbers, it is validated with the rest of the
manifest, and quantize/build-engine, which load and save the manifest, carry it along with no
extra file to copy or checksum. `bin_index` is part of its contract: export and the gateway
bin values with the same rule, so a bin means the same on both sides.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import ManifestError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"

# I/O tensor names of the graphs (the contract between export and the runtime backends).
WINDOW_INPUT = "x"  # [B, W, F], normalized readings
STEP_INPUT = "x"  # [B, F], one normalized reading per row
LOGITS = "logits"  # [B, C]
STATE_INPUTS = {"gru": ("h",), "lstm": ("h", "c")}  # each [L, B, H]
STATS_STATE = "stats"  # [1, B, stats_width]: a window_stats student's running statistics
STATE_OUTPUT_SUFFIX = "_out"  # h -> h_out, c -> c_out

ARTIFACT_KINDS = ("window", "step")
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static", "int8")
CELLS = ("gru", "lstm")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed so large engines do not need to fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Artifact:
    """One file of the deployment folder and the facts needed to trust and pick it."""

    file: str
    kind: str  # "window" or "step"
    precision: str  # one of PRECISIONS
    format: str = "onnx"  # "onnx" or "tensorrt"
    sha256: str = ""
    size_bytes: int = 0
    # build facts (TensorRT version, compute capability, GPU), quantization results, ...
    info: dict[str, Any] = field(default_factory=dict)

    def validate(self, name: str) -> None:
        if self.kind not in ARTIFACT_KINDS:
            raise ManifestError(f"artifact {name!r}: kind must be one of {ARTIFACT_KINDS}")
        if self.precision not in PRECISIONS:
            raise ManifestError(f"artifact {name!r}: precision must be one of {PRECISIONS}")
        if self.format not in ("onnx", "tensorrt"):
            raise ManifestError(f"artifact {name!r}: format must be 'onnx' or 'tensorrt'")
        if "/" in self.file or "\\" in self.file or self.file.startswith("."):
            raise ManifestError(f"artifact {name!r}: file must be a plain name in the folder")


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value: 0 below edges[0], b for edges[b-1] <= v < edges[b], E at or above
    edges[-1] (E edges, E + 1 bins, the outer two open-ended). `values` [..., F] with `edges`
    [F, E] bins every feature against its own edges; `values` [N] with `edges` [E] one series.
    One comparison pass per edge: measured 4x faster than building one [..., F, E] array."""
    values = np.asarray(values)
    bins = np.zeros(values.shape, dtype=np.intp)
    for edge in np.moveaxis(np.asarray(edges), -1, 0):
        bins += values >= edge
    return bins


def _finite(values: Any) -> bool:
    return bool(np.all(np.isfinite(np.asarray(values, dtype=np.float64))))


def _share_ok(share: list[float]) -> bool:
    total = np.asarray(share, dtype=np.float64)
    return bool(np.all(total >= 0)) and abs(float(total.sum()) - 1.0) <= 1e-6


@dataclass
class DriftReference:
    """What the inputs and outputs looked like in training, for the gateway's drift monitor
    (runtime/drift.py; written by converters/drift_reference.py at export).

    Feature figures are in normalized units, z = (raw - norm_mean) / norm_std, over every
    reading of the training split: per feature E non-decreasing bin edges (quantiles; equal
    edges where a feature has few distinct values leave empty bins on both sides) and the
    share of readings in each of the E + 1 bins (`bin_index`), with mean and variance. The
    confidence and class figures are the exported window graph's on the validation windows at
    the manifest's temperature: top-probability bin edges and shares, and the share of windows
    whose top class is each class (empty lists when there were no validation windows).

    `block_mean` and `block_sd` are the mean and spread over the training runs' blocks of
    `block` consecutive readings of each block's mean: what one device's recent mean may
    look like. The monitor decides on them, not on PSI against the fleet's marginal, which a
    single device exceeds by nature (it sits at one operating point: the demo's training runs
    score a median largest-feature PSI of 7.8 against their own split)."""

    edges: list[list[float]]  # [F][E]
    share: list[list[float]]  # [F][E + 1]
    mean: list[float]  # [F]
    var: list[float]  # [F]
    readings: int  # training readings the figures come from
    block_mean: list[float]  # [F] mean over training blocks of each block's mean
    block_sd: list[float]  # [F] their standard deviation (> 0)
    block: int  # readings per block
    confidence_edges: list[float] = field(default_factory=list)  # [K]
    confidence_share: list[float] = field(default_factory=list)  # [K + 1]
    class_share: list[float] = field(default_factory=list)  # [C]
    windows: int = 0  # validation windows the confidence and class figures come from

    def validate(self, n_features: int, n_classes: int) -> None:
        where = "drift_reference"
        fix = "; re-export the folder (edgelstm export) to rebuild it"
        try:
            edges = np.asarray(self.edges, dtype=np.float64)
        except (TypeError, ValueError):
            raise ManifestError(f"{where}.edges must be a list of number lists{fix}") from None
        if edges.ndim != 2 or edges.shape[0] != n_features or edges.shape[1] < 1:
            raise ManifestError(f"{where}.edges must be {n_features} lists of equal length{fix}")
        shape = (n_features, edges.shape[1] + 1)
        try:
            share_shape = np.asarray(self.share, dtype=np.float64).shape
        except (TypeError, ValueError):
            share_shape = ()
        if share_shape != shape:
            raise ManifestError(f"{where}.share must have shape {list(shape)}{fix}")
        if len(self.mean) != n_features or len(self.var) != n_features:
            raise ManifestError(f"{where}.mean and .var need {n_features} values each{fix}")
        if not (_finite(self.edges) and _finite(self.mean) and _finite(self.var)):
            raise ManifestError(f"{where}: edges, mean and var must be finite{fix}")
        if np.any(np.diff(edges, axis=1) < 0) or any(v < 0 for v in self.var):
            raise ManifestError(f"{where}: edges must be non-decreasing and var >= 0{fix}")
        if len(self.block_mean) != n_features or len(self.block_sd) != n_features:
            raise ManifestError(f"{where}.block_mean and .block_sd need {n_features} values{fix}")
        if not (_finite(self.block_mean) and _finite(self.block_sd)) or self.block < 1:
            raise ManifestError(f"{where}: block figures must be finite, block >= 1{fix}")
        if any(v <= 0 for v in self.block_sd):
            raise ManifestError(f"{where}.block_sd must be > 0{fix}")
        if not all(_share_ok(row) for row in self.share) or self.readings < 1:
            raise ManifestError(f"{where}.share rows must be >= 0 and sum to 1{fix}")
        if self.windows == 0:
            if self.confidence_edges or self.confidence_share or self.class_share:
                raise ManifestError(f"{where}: confidence figures without windows{fix}")
            return
        if len(self.confidence_share) != len(self.confidence_edges) + 1:
            raise ManifestError(f"{where}.confidence_share needs one more value than edges{fix}")
        if len(self.class_share) != n_classes:
            raise ManifestError(f"{where}.class_share needs {n_classes} values{fix}")
        confidence = np.asarray(self.confidence_edges, dtype=np.float64)
        if not _finite(confidence) or np.any(np.diff(confidence) < 0):
            raise ManifestError(f"{where}.confidence_edges must be finite, non-decreasing{fix}")
        if not (_share_ok(self.confidence_share) and _share_ok(self.class_share)):
            raise ManifestError(f"{where}: confidence and class shares must sum to 1{fix}")


@dataclass
class Manifest:
    """Everything the runtime needs to turn raw readings into class probabilities."""

    model_name: str
    model_version: str
    model_kind: str  # "student" (streamable) or "teacher" (window graph only)
    features: list[str]
    norm_mean: list[float]
    norm_std: list[float]
    classes: list[str]  # index 0 = the normal class
    window: int
    hop: int
    cell: str | None = None  # "gru" / "lstm" for a student
    layers: int = 0
    hidden_size: int = 0
    # width of the running window-statistics state after h/c (0: the student has none)
    stats_width: int = 0
    sample_period_s: float | None = None  # median reading period seen in training
    # softmax(logits / temperature) is what the folder serves; fitted on validation windows at
    # export so that a confidence of p is right about p of the time (1.0: folders before it)
    temperature: float = 1.0
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    # training statistics the gateway's drift monitor compares live inputs with (None: folders
    # exported before it; the monitor is then off)
    drift_reference: DriftReference | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def state_names(self) -> tuple[str, ...]:
        """Step-graph state inputs in order: ('h',) for GRU, ('h', 'c') for LSTM, then 'stats'
        when the student carries running window statistics."""
        if self.cell is None:
            return ()
        return STATE_INPUTS[self.cell] + ((STATS_STATE,) if self.stats_width else ())

    def state_shapes(self, batch: int) -> tuple[tuple[int, int, int], ...]:
        """Shape of each state tensor, in state_names order: [layers, batch, hidden] for h/c,
        [1, batch, stats_width] for stats. Axis 1 is always the batch."""
        return tuple(
            (1, batch, self.stats_width)
            if name == STATS_STATE
            else (self.layers, batch, self.hidden_size)
            for name in self.state_names
        )

    def zero_state(self, batch: int) -> tuple[np.ndarray, ...]:
        """The state every window starts from: zeros, one float32 array per state tensor."""
        return tuple(np.zeros(shape, np.float32) for shape in self.state_shapes(batch))

    @property
    def max_open_windows(self) -> int:
        """ceil(W / H): how many windows of one device are open at once when streaming."""
        return math.ceil(self.window / self.hop)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Class probabilities [B, C] of logits [B, C] as served: softmax(logits / temperature)
        in float64, so a debounce threshold of 0.6 means a calibrated 60%."""
        z = np.asarray(logits, dtype=np.float64) / self.temperature
        z -= z.max(axis=1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(axis=1, keepdims=True)
        return probs

    def validate(self) -> None:
        """Raises ManifestError naming the first field that breaks the contract."""
        if self.schema_version != SCHEMA_VERSION:
            raise ManifestError(
                f"schema_version {self.schema_version} is not supported by this runtime "
                f"(expects {SCHEMA_VERSION}); re-export with a matching edgelstm version"
            )
        if self.model_kind not in ("student", "teacher"):
            raise ManifestError("model_kind must be 'student' or 'teacher'")
        if not self.features:
            raise ManifestError("features is empty")
        if len(self.norm_mean) != self.n_features or len(self.norm_std) != self.n_features:
            raise ManifestError(
                f"norm_mean/norm_std need {self.n_features} values (one per feature), "
                f"got {len(self.norm_mean)}/{len(self.norm_std)}"
            )
        if any(not (s > 0 and math.isfinite(s)) for s in self.norm_std):
            raise ManifestError("norm_std values must be finite and > 0")
        if any(not math.isfinite(m) for m in self.norm_mean):
            raise ManifestError("norm_mean values must be finite")
        if len(self.classes) < 2:
            raise ManifestError("classes needs at least two names (index 0 = normal)")
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or not (math.isfinite(self.temperature) and self.temperature > 0)
        ):
            raise ManifestError(
                f"temperature must be a finite number > 0, got {self.temperature!r}; re-export "
                "the folder or set it to 1.0 for uncalibrated probabilities"
            )
        if self.window < 1 or not 1 <= self.hop <= self.window:
            raise ManifestError(
                f"need window >= 1 and 1 <= hop <= window, got {self.window}/{self.hop}"
            )
        if self.model_kind == "student":
            if self.cell not in CELLS:
                raise ManifestError(f"cell must be one of {CELLS} for a student, got {self.cell!r}")
            if self.layers < 1 or self.hidden_size < 1:
                raise ManifestError("a student needs layers >= 1 and hidden_size >= 1")
            if self.stats_width and (self.stats_width - 1) % self.n_features:
                raise ManifestError(
                    f"stats_width must be k·{self.n_features} + 1 (k statistics per feature "
                    f"and a count), got {self.stats_width}; re-export the folder"
                )
        for name, art in self.artifacts.items():
            art.validate(name)
        if self.drift_reference is not None:
            self.drift_reference.validate(self.n_features, self.n_classes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        if not isinstance(raw, dict):
            raise ManifestError("manifest must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ManifestError(f"unknown manifest keys {unknown}; is the runtime too old?")
        try:
            arts = {k: Artifact(**v) for k, v in raw.get("artifacts", {}).items()}
            drift = raw.get("drift_reference")
            if drift is not None:
                drift = DriftReference(**drift)
            manifest = cls(**{**raw, "artifacts": arts, "drift_reference": drift})
        except TypeError as exc:
            raise ManifestError(f"manifest is missing or has wrong fields: {exc}") from None
        manifest.validate()
        return manifest

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        """Reads `folder/manifest.json` and validates it (sha256 is checked on use)."""
        path = Path(folder) / MANIFEST_FILE
        if not path.is_file():
            raise ManifestError(
                f"{path} not found: point --model-dir at a folder written by `edgelstm export`"
            )
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{path}: not readable JSON ({exc})") from None
        return cls.from_dict(raw)

    def save(self, folder: str | Path) -> Path:
        """Validates and writes `folder/manifest.json` atomically."""
        self.validate()
        path = Path(folder) / MANIFEST_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        tmp.replace(path)
        return path

    def add_artifact(self, folder: str | Path, name: str, artifact: Artifact) -> Artifact:
        """Records a file written into the folder, with its sha256 and size."""
        path = Path(folder) / artifact.file
        artifact.sha256 = sha256_file(path)
        artifact.size_bytes = path.stat().st_size
        artifact.validate(name)
        self.artifacts[name] = artifact
        return artifact

    def verified_path(self, folder: str | Path, name: str) -> Path:
        """Path of an artifact after checking it exists and its sha256 matches."""
        if name not in self.artifacts:
            raise ManifestError(
                f"the deployment folder has no artifact {name!r} (it has {sorted(self.artifacts)})"
            )
        art = self.artifacts[name]
        path = Path(folder) / art.file
        if not path.is_file():
            raise ManifestError(f"{path} is listed in the manifest but missing")
        actual = sha256_file(path)
        if actual != art.sha256:
            raise ManifestError(
                f"{path} does not match its manifest sha256 (expected {art.sha256[:12]}…, "
                f"got {actual[:12]}…): the file was modified or corrupted; copy the deployment "
                "folder again or re-export"
            )
        return path
