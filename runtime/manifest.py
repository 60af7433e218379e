"""The deployment folder contract: manifest.json schema, loading, validation, sha256 checks.

The device side owns this schema; converters write manifests through `Manifest.save`.
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
    sample_period_s: float | None = None  # median reading period seen in training
    # softmax(logits / temperature) is what the folder serves; fitted on validation windows at
    # export so that a confidence of p is right about p of the time (1.0: folders before it)
    temperature: float = 1.0
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def state_names(self) -> tuple[str, ...]:
        """Step-graph state inputs in order: ('h',) for GRU, ('h', 'c') for LSTM."""
        if self.cell is None:
            return ()
        return STATE_INPUTS[self.cell]

    def state_shape(self, batch: int) -> tuple[int, int, int]:
        """Shape of each recurrent state tensor: [layers, batch, hidden]."""
        return (self.layers, batch, self.hidden_size)

    def zero_state(self, batch: int) -> tuple[np.ndarray, ...]:
        """The state every window starts from: zeros, one float32 array per state tensor."""
        return tuple(np.zeros(self.state_shape(batch), np.float32) for _ in self.state_names)

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
        for name, art in self.artifacts.items():
            art.validate(name)

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
            manifest = cls(**{**raw, "artifacts": arts})
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
