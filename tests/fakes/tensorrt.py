"""A fake `tensorrt` module per API generation ("8.6", "10.3", "10.x", "11.x") over a `FakeGpu`.

Each generation exposes exactly the names of `tests/fakes/trt_names.py` on the classes edgelstm
uses: a name the real module lacks raises AttributeError, a real name this fake does not
implement raises NotImplementedError when called. Every call is recorded on the FakeGpu.

What the fake does, beyond keeping names honest:

- `OnnxParser.parse` reads the ONNX model and refuses what TensorRT's ONNX parser refuses of
  quantized graphs (NVIDIA's onnx-tensorrt operator table: DequantizeLinear takes INT8 input
  with a zero point of 0): a DequantizeLinear of an INT32 bias, a non-zero zero point, and on
  8.6 a DequantizeLinear fed by an int8 initializer (8.x quantizes float weights through their
  own QuantizeLinear, ONNX Runtime's AddQDQPairToWeight). On 8.6 the network must have been
  created with EXPLICIT_BATCH.
- `Builder.build_serialized_network` refuses (logs an error, returns None) precision flags on
  a strongly typed network, a Q/DQ graph in a weakly typed network without the INT8 flag, and
  inputs without an optimization profile. The "engine" it returns holds the parsed ONNX model
  and the profile; a strongly typed build from an fp16 ONNX model therefore runs in fp16.
- `Runtime.deserialize_cuda_engine` returns None for bytes that are not an engine of this
  TensorRT version and compute capability (as TensorRT does).
- `IExecutionContext.execute_async_v3` reads its inputs from the fake device memory at the
  addresses set with `set_tensor_address`, in the shapes set with `set_input_shape` (checked
  against the profile), runs the model with ONNX Runtime on the CPU and writes the outputs back.
  `perturb` adds noise to the logits, standing in for an engine that computes something else.
- Timing caches serialize with the TensorRT version that wrote them; `set_timing_cache` raises
  RuntimeError for one written by another version unless ignore_mismatch, and
  `create_timing_cache` returns None for bytes that are not a cache.
"""

from __future__ import annotations

import enum
import json
import types
from typing import Any

import numpy as np

from tests.fakes.gpu import FakeGpu
from tests.fakes.trt_names import CREATION_FLAG_VALUES, NAMES, VERSIONS

ENGINE_MAGIC = b"FAKE-TENSORRT-ENGINE\n"
CACHE_MAGIC = b"FAKE-TENSORRT-TIMING-CACHE\n"
SEVERITIES = {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4}
DATA_TYPES = {
    "FLOAT": 0,
    "HALF": 1,
    "INT8": 2,
    "INT32": 3,
    "BOOL": 4,
    "UINT8": 5,
    "FP8": 6,
    "BF16": 7,
    "INT64": 8,
    "INT4": 9,
    "FP4": 10,
    "E8M0": 11,
}
NUMPY_OF = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32}
# ONNX TensorProto element types -> TensorRT DataType names
ONNX_TYPES = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 9: "BOOL", 2: "UINT8", 7: "INT64"}


def _unfaked(cls: str, name: str) -> Any:
    def missing(*_args: Any, **_kwargs: Any) -> Any:
        raise NotImplementedError(
            f"fake tensorrt: {cls}.{name} exists in the real API but is not faked"
        )

    return missing


def _surface(generation: str, cls: str, impl: type) -> type:
    """`impl` cut to exactly the public names the real `cls` has in `generation`."""
    names = NAMES[generation][cls]
    namespace: dict[str, Any] = {
        k: v
        for k, v in vars(impl).items()
        if k.startswith("_") and k not in ("__dict__", "__weakref__")
    }
    for name in names:
        namespace[name] = vars(impl)[name] if name in vars(impl) else _unfaked(cls, name)
    return type(cls, (), namespace)


def _enum(name: str, members: dict[str, int]) -> type[enum.IntEnum]:
    return enum.IntEnum(name, members)


def _onnx_rules(model: Any, generation: str) -> list[str]:
    """What TensorRT's parser refuses in a quantized graph (see the module docstring)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    produced_by_q = {o for n in model.graph.node if n.op_type == "QuantizeLinear" for o in n.output}
    errors = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero_point = inits.get(node.input[2]) if len(node.input) > 2 else None
        if zero_point is not None and np.any(numpy_helper.to_array(zero_point) != 0):
            errors.append(f"{node.name}: {node.op_type} zero point must be zero")
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        if source in inits:
            kind = ONNX_TYPES.get(inits[source].data_type, str(inits[source].data_type))
            if kind != "INT8":
                errors.append(f"{node.name}: DequantizeLinear input {source} is {kind}; only INT8")
            elif generation == "8.6":
                errors.append(
                    f"{node.name}: DequantizeLinear of the int8 initializer {source}; "
                    "quantize float weights with QuantizeLinear"
                )
        elif source not in produced_by_q:
            errors.append(f"{node.name}: DequantizeLinear input {source} is not quantized")
    return errors


def _dims(value_info: Any) -> list[Any]:
    return [
        d.dim_param if d.dim_param or not d.HasField("dim_value") else int(d.dim_value)
        for d in value_info.type.tensor_type.shape.dim
    ]


def make_tensorrt(generation: str, gpu: FakeGpu, *, perturb: float = 0.0) -> types.ModuleType:
    """The fake `tensorrt` module of `generation`."""
    version = VERSIONS[generation]
    names = NAMES[generation]
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    record = gpu.record

    BuilderFlag = _enum("BuilderFlag", {n: i for i, n in enumerate(sorted(names["BuilderFlag"]))})
    CreationFlag = _enum("NetworkDefinitionCreationFlag", CREATION_FLAG_VALUES[generation])
    MemoryPoolType = _enum(
        "MemoryPoolType", {n: i for i, n in enumerate(sorted(names["MemoryPoolType"]))}
    )
    levels = {"NONE": 0, "AMPERE_PLUS": 1, "SAME_COMPUTE_CAPABILITY": 2}
    HardwareLevel = _enum(
        "HardwareCompatibilityLevel",
        {n: v for n, v in levels.items() if n in names["HardwareCompatibilityLevel"]},
    )
    TensorIOMode = _enum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    DataType = _enum("DataType", {n: v for n, v in DATA_TYPES.items() if n in names["DataType"]})
    Severity = _enum("Severity", SEVERITIES)

    def strongly_typed_network(flags: int) -> bool:
        if generation == "11.x":
            return True  # always strongly typed; the flag is deprecated and ignored
        bit = CREATION_FLAG_VALUES[generation].get("STRONGLY_TYPED")
        return bit is not None and bool(flags & (1 << bit))

    class ILogger:
        def __init__(self) -> None:
            pass

        def log(self, severity: Any, msg: str) -> None:
            pass

    for member in Severity:
        setattr(ILogger, member.name, member)
    ILogger.Severity = Severity

    class Logger(ILogger):
        def __init__(self, min_severity: Any = Severity.WARNING) -> None:
            record("Logger", int(min_severity))
            self.min_severity = min_severity
            self.messages: list[tuple[Any, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append((severity, msg))

    class _Tensor:
        def __init__(self, name: str, dtype: str, dims: list[Any]) -> None:
            self.name, self.dtype, self.dims = name, dtype, dims

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.model_bytes: bytes | None = None
            self.inputs: list[_Tensor] = []
            self.outputs: list[_Tensor] = []
            self.has_qdq = False

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_outputs(self) -> int:
            return len(self.outputs)

    class ParserError:
        def __init__(self, desc: str) -> None:
            self._desc = desc

        def desc(self) -> str:
            return self._desc

        def __str__(self) -> str:
            return f"In node -1 with name: : ERROR: {self._desc}"

    class _OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Any) -> None:
            record("OnnxParser", network.flags)
            self._network, self._logger = network, logger
            self._errors: list[ParserError] = []

        def parse(self, model: bytes, path: str | None = None) -> bool:
            import onnx

            record("OnnxParser.parse", len(model))
            network = self._network
            problems = []
            if generation == "8.6" and not network.flags & (
                1 << CREATION_FLAG_VALUES["8.6"]["EXPLICIT_BATCH"]
            ):
                problems.append(
                    "the network must have an explicit batch dimension (EXPLICIT_BATCH)"
                )
            proto = onnx.load_from_string(bytes(model))
            problems += _onnx_rules(proto, generation)
            if problems:
                self._errors = [ParserError(p) for p in problems]
                return False
            inits = {i.name for i in proto.graph.initializer}
            network.inputs = [
                _Tensor(i.name, ONNX_TYPES[i.type.tensor_type.elem_type], _dims(i))
                for i in proto.graph.input
                if i.name not in inits
            ]
            network.outputs = [
                _Tensor(o.name, ONNX_TYPES[o.type.tensor_type.elem_type], _dims(o))
                for o in proto.graph.output
            ]
            network.has_qdq = any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
            network.fp16_weights = any(i.data_type == 10 for i in proto.graph.initializer)
            network.model_bytes = bytes(model)
            return True

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> ParserError:
            return self._errors[index]

        def clear_errors(self) -> None:
            self._errors = []

    class _IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, list[tuple[int, ...]]] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
            shapes = [tuple(int(d) for d in s) for s in (min, opt, max)]
            record("IOptimizationProfile.set_shape", input, *shapes)
            if not all(a <= b <= c for a, b, c in zip(*shapes, strict=True)):
                raise ValueError(f"profile of {input}: need min <= opt <= max, got {shapes}")
            self.shapes[input] = shapes

        def get_shape(self, input: str) -> list[tuple[int, ...]]:
            return self.shapes[input]

    class _ITimingCache:
        def __init__(self, written_by: str, entries: int = 0) -> None:
            self.written_by, self.entries = written_by, entries

        def serialize(self) -> IHostMemory:
            header = json.dumps({"version": self.written_by, "entries": self.entries}).encode()
            return IHostMemory(CACHE_MAGIC + header)

        def combine(self, input_cache: Any, ignore_mismatch: bool) -> bool:
            self.entries += input_cache.entries
            return True

        def reset(self) -> bool:
            self.entries = 0
            return True

    class _IBuilderConfig:
        def __init__(self) -> None:
            self._flags: set[str] = {"TF32"} if "TF32" in names["BuilderFlag"] else set()
            self.profiles: list[Any] = []
            self.pools: dict[str, int] = {}
            self._cache: Any = None
            self.hardware_compatibility_level = HardwareLevel.NONE

        def set_flag(self, flag: Any) -> None:
            record("IBuilderConfig.set_flag", flag.name)
            self._flags.add(flag.name)

        def clear_flag(self, flag: Any) -> None:
            record("IBuilderConfig.clear_flag", flag.name)
            self._flags.discard(flag.name)

        def get_flag(self, flag: Any) -> bool:
            return flag.name in self._flags

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            record("IBuilderConfig.set_memory_pool_limit", pool.name, int(pool_size))
            self.pools[pool.name] = int(pool_size)

        def get_memory_pool_limit(self, pool: Any) -> int:
            return self.pools.get(pool.name, 0)

        @property
        def max_workspace_size(self) -> int:
            return self.pools.get("WORKSPACE", 0)

        @max_workspace_size.setter
        def max_workspace_size(self, value: int) -> None:
            record("IBuilderConfig.max_workspace_size", int(value))
            self.pools["WORKSPACE"] = int(value)

        def add_optimization_profile(self, profile: Any) -> int:
            record("IBuilderConfig.add_optimization_profile")
            self.profiles.append(profile)
            return len(self.profiles) - 1

        @property
        def num_optimization_profiles(self) -> int:
            return len(self.profiles)

        def create_timing_cache(self, serialized_timing_cache: Any) -> Any:
            blob = bytes(serialized_timing_cache)
            record("IBuilderConfig.create_timing_cache", len(blob))
            if not blob:
                return ITimingCache(version)
            if not blob.startswith(CACHE_MAGIC):
                return None  # not a timing cache: TensorRT returns a null cache
            header = json.loads(blob[len(CACHE_MAGIC) :])
            return ITimingCache(header["version"], header["entries"])

        def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
            record(
                "IBuilderConfig.set_timing_cache",
                getattr(cache, "written_by", None),
                ignore_mismatch,
            )
            if not isinstance(cache, ITimingCache):
                raise TypeError("set_timing_cache(): incompatible function arguments")
            if cache.written_by != version and not ignore_mismatch:
                raise RuntimeError(
                    f"timing cache was written by TensorRT {cache.written_by}, this is {version}"
                )
            self._cache = cache
            return True

        def get_timing_cache(self) -> Any:
            return self._cache

    class IHostMemory:
        def __init__(self, data: bytes) -> None:
            self._data = data

        def __bytes__(self) -> bytes:
            return self._data

        @property
        def nbytes(self) -> int:
            return len(self._data)

        @property
        def dtype(self) -> Any:
            return DataType.UINT8

    class _Builder:
        def __init__(self, logger: Any) -> None:
            record("Builder")
            self.logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            record("Builder.create_network", int(flags))
            return INetworkDefinition(int(flags))

        def create_builder_config(self) -> Any:
            record("Builder.create_builder_config")
            return IBuilderConfig()

        def create_optimization_profile(self) -> Any:
            record("Builder.create_optimization_profile")
            return IOptimizationProfile()

        def _refuse(self, msg: str) -> None:
            self.logger.log(Severity.ERROR, msg)

        def build_serialized_network(self, network: INetworkDefinition, config: Any) -> Any:
            strongly = strongly_typed_network(network.flags)
            flags = sorted(config._flags)
            record("Builder.build_serialized_network", strongly, tuple(flags))
            if network.model_bytes is None:
                return self._refuse("the network is empty (nothing was parsed)")
            precision_flags = {"FP16", "INT8", "BF16", "FP8", "INT4", "FP4"} & config._flags
            if strongly and precision_flags:
                return self._refuse(
                    f"precision flags {sorted(precision_flags)} on a strongly typed network"
                )
            if network.has_qdq and not strongly and "INT8" not in config._flags:
                return self._refuse("Q/DQ layers in a weakly typed network need the INT8 flag")
            if len(config.profiles) != 1:
                return self._refuse(
                    f"expected one optimization profile, got {len(config.profiles)}"
                )
            profile = config.profiles[0].shapes
            for tensor in network.inputs:
                shapes = profile.get(tensor.name)
                if shapes is None:
                    return self._refuse(f"no optimization profile shape for input {tensor.name}")
                for shape in shapes:
                    fixed = [d for d in tensor.dims]
                    if len(shape) != len(fixed) or any(
                        isinstance(d, int) and d > 0 and d != s
                        for d, s in zip(fixed, shape, strict=True)
                    ):
                        return self._refuse(
                            f"profile shape {shape} does not fit {tensor.name}{fixed}"
                        )
            if config._cache is not None:
                config._cache.entries += 1
            header = {
                "version": version,
                "compute_capability": list(gpu.compute_capability),
                "gpu": gpu.name,
                "strongly_typed": strongly,
                "fp16": (strongly and network.fp16_weights) or "FP16" in config._flags,
                "profile": profile,
                "inputs": [(t.name, t.dtype, t.dims) for t in network.inputs],
                "outputs": [(t.name, t.dtype, t.dims) for t in network.outputs],
                "hardware_compatibility_level": int(config.hardware_compatibility_level),
            }
            return IHostMemory(
                ENGINE_MAGIC + json.dumps(header).encode() + b"\n" + network.model_bytes
            )

    class _Runtime:
        def __init__(self, logger: Any) -> None:
            record("Runtime")
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine: Any) -> Any:
            blob = bytes(serialized_engine)
            record("Runtime.deserialize_cuda_engine", len(blob))
            if not blob.startswith(ENGINE_MAGIC):
                self.logger.log(Severity.ERROR, "the engine plan file is corrupted")
                return None
            header_line, model = blob[len(ENGINE_MAGIC) :].split(b"\n", 1)
            header = json.loads(header_line)
            if header["version"] != version:
                self.logger.log(
                    Severity.ERROR,
                    f"serialization version mismatch: engine of {header['version']}, "
                    f"this is {version}",
                )
                return None
            if tuple(header["compute_capability"]) != gpu.compute_capability:
                self.logger.log(Severity.ERROR, "engine plan built for another compute capability")
                return None
            return ICudaEngine(header, model)

    class _ICudaEngine:
        def __init__(self, header: dict[str, Any], model: bytes) -> None:
            self._header = header
            self._model = model
            self._io = [(n, "INPUT", t, d) for n, t, d in header["inputs"]] + [
                (n, "OUTPUT", t, d) for n, t, d in header["outputs"]
            ]

        @property
        def num_io_tensors(self) -> int:
            return len(self._io)

        def get_tensor_name(self, index: int) -> str:
            record("ICudaEngine.get_tensor_name", index)
            return self._io[index][0]

        def _entry(self, name: str) -> tuple:
            for entry in self._io:
                if entry[0] == name:
                    return entry
            raise KeyError(name)

        def get_tensor_mode(self, name: str) -> Any:
            return TensorIOMode[self._entry(name)[1]]

        def get_tensor_dtype(self, name: str) -> Any:
            return DataType[self._entry(name)[2]]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return tuple(d if isinstance(d, int) else -1 for d in self._entry(name)[3])

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
            record("ICudaEngine.get_tensor_profile_shape", name, profile_index)
            if profile_index != 0 or name not in self._header["profile"]:
                raise RuntimeError(f"no profile {profile_index} shape for {name}")
            return [tuple(s) for s in self._header["profile"][name]]

        @property
        def num_optimization_profiles(self) -> int:
            return 1

        @property
        def hardware_compatibility_level(self) -> Any:
            return HardwareLevel(self._header["hardware_compatibility_level"])

        def create_execution_context(self) -> Any:
            record("ICudaEngine.create_execution_context")
            return IExecutionContext(self)

    class _IExecutionContext:
        def __init__(self, engine: Any) -> None:
            import onnxruntime as ort

            self._engine = engine
            self._shapes: dict[str, tuple[int, ...]] = {}
            self._addresses: dict[str, int] = {}
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.log_severity_level = 3
            self._session = ort.InferenceSession(
                engine._model, options, providers=["CPUExecutionProvider"]
            )
            self._rng = np.random.default_rng(0)

        def set_input_shape(self, name: str, shape: Any) -> bool:
            shape = tuple(int(d) for d in shape)
            record("IExecutionContext.set_input_shape", name, shape)
            low, _opt, high = self._engine._header["profile"][name]
            if len(shape) != len(low) or not all(
                a <= s <= b for a, s, b in zip(low, shape, high, strict=True)
            ):
                return False
            self._shapes[name] = shape
            return True

        def _symbols(self) -> dict[str, int]:
            symbols: dict[str, int] = {}
            for name, _t, dims in self._engine._header["inputs"]:
                for d, s in zip(dims, self._shapes.get(name, ()), strict=False):
                    if isinstance(d, str):
                        symbols[d] = s
            return symbols

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            entry = self._engine._entry(name)
            if entry[1] == "INPUT":
                return self._shapes.get(name, self._engine.get_tensor_shape(name))
            symbols = self._symbols()
            return tuple(d if isinstance(d, int) else symbols.get(d, -1) for d in entry[3])

        def set_tensor_address(self, name: str, memory: int) -> bool:
            record("IExecutionContext.set_tensor_address", name, int(memory))
            self._engine._entry(name)
            self._addresses[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            record("IExecutionContext.execute_async_v3", stream_handle)
            engine = self._engine
            feeds = {}
            for name, _t, _d in engine._header["inputs"]:
                if name not in self._shapes or name not in self._addresses:
                    return False
                dtype = np.dtype(NUMPY_OF[engine._entry(name)[2]])
                shape = self._shapes[name]
                nbytes = int(np.prod(shape)) * dtype.itemsize
                data = gpu.buffer(self._addresses[name], nbytes)
                feeds[name] = np.frombuffer(data, dtype).reshape(shape).copy()
            names = [n for n, _t, _d in engine._header["outputs"]]
            outputs = self._session.run(names, feeds)
            for name, value in zip(names, outputs, strict=True):
                if name not in self._addresses:
                    return False
                value = np.asarray(value, NUMPY_OF[engine._entry(name)[2]])
                if perturb and name == "logits":
                    value = value + perturb * self._rng.standard_normal(value.shape).astype(
                        value.dtype
                    )
                assert value.shape == self.get_tensor_shape(name), (name, value.shape)
                gpu.buffer(self._addresses[name], value.nbytes)[:] = value.tobytes()
            return True

    IBuilderConfig = _surface(generation, "IBuilderConfig", _IBuilderConfig)
    IOptimizationProfile = _surface(generation, "IOptimizationProfile", _IOptimizationProfile)
    ITimingCache = _surface(generation, "ITimingCache", _ITimingCache)
    ICudaEngine = _surface(generation, "ICudaEngine", _ICudaEngine)
    IExecutionContext = _surface(generation, "IExecutionContext", _IExecutionContext)

    def nptype(trt_type: Any) -> type:
        return NUMPY_OF[trt_type.name]

    def volume(iterable: Any) -> int:
        return int(np.prod(list(iterable)))

    for name, value in {
        "BuilderFlag": BuilderFlag,
        "NetworkDefinitionCreationFlag": CreationFlag,
        "MemoryPoolType": MemoryPoolType,
        "HardwareCompatibilityLevel": HardwareLevel,
        "TensorIOMode": TensorIOMode,
        "DataType": DataType,
        "ILogger": ILogger,
        "Logger": Logger,
        "Builder": _surface(generation, "Builder", _Builder),
        "OnnxParser": _surface(generation, "OnnxParser", _OnnxParser),
        "Runtime": _surface(generation, "Runtime", _Runtime),
        "IBuilderConfig": IBuilderConfig,
        "IOptimizationProfile": IOptimizationProfile,
        "ITimingCache": ITimingCache,
        "ICudaEngine": ICudaEngine,
        "IExecutionContext": IExecutionContext,
        "IHostMemory": IHostMemory,
        "INetworkDefinition": INetworkDefinition,
        "nptype": nptype,
        "volume": volume,
    }.items():
        setattr(trt, name, value)
    for member in Severity:
        setattr(Logger, member.name, member)
    return trt
