"""Hugging Face GPT-2 folders in and out: config.json + model.safetensors (or pytorch_model.bin).

The format differs from ours in two ways only. Parameter names may carry a leading
"transformer." (a GPT2LMHeadModel) or not (a GPT2Model, as OpenAI's own upload). And
GPT-2's projections are `Conv1D` layers whose weight is (in, out), the transpose of
`nn.Linear`'s (out, in). The output head is tied to the token embedding in both.

Loading is safe: safetensors holds no code, a .bin is read with `weights_only=True`; every
name, shape and dtype is checked against config.json before a tensor is read. The
tokenizer files of a folder (vocab.json, merges.txt) are read by gpt.tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import zipfile
from pathlib import Path
from typing import Callable

import torch

from gpt.config import GPTConfig
from gpt.errors import GptmeterError
from gpt.files import atomic_write, atomic_write_text

SAFETENSORS, PYTORCH_BIN, CONFIG = "model.safetensors", "pytorch_model.bin", "config.json"
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers older checkpoints saved; not weights
FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
LAYER_NORM_EPSILON = 1e-5  # nn.LayerNorm's default, which gpt.model uses; GPT-2's value


class HFFormatError(GptmeterError, ValueError):
    """A folder is not a GPT-2 checkpoint we can read, or a model cannot be written as one."""


# ----------------------------------------------------------------------------- config.json


def read_config(folder: Path) -> GPTConfig:
    """The GPTConfig of a Hugging Face GPT-2 folder; HFFormatError naming any setting GPT cannot hold."""
    path = Path(folder) / CONFIG
    if not Path(folder).is_dir():
        raise HFFormatError(f"{folder} is not a folder; pass a Hugging Face GPT-2 folder (config.json + weights)")
    if not path.is_file():
        raise HFFormatError(f"{folder} has no {CONFIG}; pass a Hugging Face GPT-2 folder (config.json + weights)")
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HFFormatError(f"{path} is not valid JSON ({error}); restore the file") from None
    if not isinstance(hf, dict) or hf.get("model_type") != "gpt2":
        kind = hf.get("model_type") if isinstance(hf, dict) else None
        raise HFFormatError(f"{path} describes a {kind!r} model; only GPT-2 (model_type \"gpt2\") can be loaded")
    n_embd = hf.get("n_embd")
    required = {  # setting: (value GPT needs, what differs otherwise)
        "activation_function": (hf.get("activation_function") in ("gelu_new", "gelu_pytorch_tanh"), "a tanh GELU"),
        "n_inner": (hf.get("n_inner") in (None, 4 * n_embd if isinstance(n_embd, int) else None), "an MLP 4x wide"),
        "layer_norm_epsilon": (hf.get("layer_norm_epsilon", LAYER_NORM_EPSILON) == LAYER_NORM_EPSILON, "1e-5"),
        "scale_attn_weights": (hf.get("scale_attn_weights", True) is True, "scores scaled by 1/sqrt(head size)"),
        "scale_attn_by_inverse_layer_idx": (not hf.get("scale_attn_by_inverse_layer_idx", False), "no layer scaling"),
        "add_cross_attention": (not hf.get("add_cross_attention", False), "no cross-attention"),
        "tie_word_embeddings": (hf.get("tie_word_embeddings", True) is True, "a head tied to the embedding"),
    }
    for name, (ok, needed) in required.items():
        if not ok:
            raise HFFormatError(f"{path}: {name} = {hf.get(name)!r} is not supported; gptmeter's GPT has {needed}")
    try:
        return GPTConfig(vocab_size=hf.get("vocab_size"), block_size=hf.get("n_positions"), n_layer=hf.get("n_layer"),
                         n_head=hf.get("n_head"), n_embd=n_embd, bias=True, dropout=0.0)
    except ValueError as error:
        raise HFFormatError(f"{path}: {error}") from None


def hf_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a GPT-2 folder must hold for `config`, by its name there (without "transformer.")."""
    from gpt.model import GPT

    with torch.device("meta"):
        state = GPT(config).state_dict()
    return {_hf_name(name): tuple(_to_hf(name, tensor).shape) for name, tensor in state.items()
            if name != "lm_head.weight"}


def _hf_name(ours: str) -> str:
    return ours.removeprefix("transformer.")


def _to_hf(name: str, tensor: torch.Tensor) -> torch.Tensor:
    return tensor.t() if name.endswith(CONV1D_WEIGHTS) else tensor


# ----------------------------------------------------------------------------- import


Index = dict[str, tuple[tuple[int, ...], str]]  # tensor name -> (shape, dtype name), read without loading a tensor
Reader = Callable[[str], torch.Tensor]  # tensor name -> the tensor


def _open_safetensors(path: Path) -> tuple[Index, Reader]:
    from safetensors import SafetensorError, safe_open

    try:
        handle = safe_open(str(path), framework="pt")
        index = {name: (tuple(handle.get_slice(name).get_shape()), handle.get_slice(name).get_dtype())
                 for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise HFFormatError(f"{path} is truncated or not a safetensors file ({error}); download it again") from None
    return index, handle.get_tensor


def _open_bin(path: Path) -> tuple[Index, Reader]:
    try:  # weights_only: tensors and plain containers, never arbitrary objects; mmap: nothing read yet
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        raise HFFormatError(f"{path} is truncated or not a PyTorch weights file ({type(error).__name__}); "
                            "download it again") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise HFFormatError(f"{path} does not hold a dictionary of tensors")
    dtype_names = {dtype: name for name, dtype in FLOAT_DTYPES.items()}
    return {name: (tuple(t.shape), dtype_names.get(t.dtype, str(t.dtype))) for name, t in state.items()}, \
        state.__getitem__


def _open_sharded(index_path: Path, open_shard: Callable[[Path], tuple[Index, Reader]]) -> tuple[Index, Reader]:
    """A checkpoint split over shard files by an index (`weight_map`: tensor name -> shard file in the folder).

    Every shard is opened (headers only) and must hold every tensor the index places in it.
    """
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8")).get("weight_map")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        raise HFFormatError(f"{index_path} is not a valid index ({error}); download it again") from None
    if not (isinstance(weight_map, dict) and weight_map
            and all(isinstance(shard, str) and shard == Path(shard).name and shard not in ("", ".", "..")
                    for shard in weight_map.values())):
        raise HFFormatError(f"{index_path} has no weight_map of tensor names to shard files in its folder; "
                            "download it again")
    shards: dict[str, set[str]] = {}
    for name, shard in weight_map.items():
        shards.setdefault(shard, set()).add(name)
    index: Index = {}
    readers: dict[str, Reader] = {}
    for shard, names in sorted(shards.items()):
        path = index_path.parent / shard
        if not path.is_file():
            raise HFFormatError(f"{path} is missing ({index_path.name} lists it); copy all {len(shards)} shard "
                                "files of the checkpoint into the folder")
        held, read = open_shard(path)
        absent = sorted(names - set(held))
        if absent:
            raise HFFormatError(f"{path} lacks {absent[0]!r}, which {index_path.name} places there; the shard does "
                                "not belong to this index: download the checkpoint again")
        index.update((name, held[name]) for name in names)
        readers.update(dict.fromkeys(names, read))
    return index, lambda name: readers[name](name)


WEIGHT_FILES = (  # what transformers looks for, in its order: (file, how to open it, sharded)
    (SAFETENSORS, _open_safetensors, False),
    (SAFETENSORS + ".index.json", _open_safetensors, True),
    (PYTORCH_BIN, _open_bin, False),
    (PYTORCH_BIN + ".index.json", _open_bin, True),
)


def _open_weights(folder: Path) -> tuple[Path, Index, Reader]:
    """The weights file (or shard index), {name: (shape, dtype)} read without loading any tensor, and a reader."""
    for name, open_file, sharded in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            return path, *(_open_sharded(path, open_file) if sharded else open_file(path))
    raise HFFormatError(f"{folder} has no {SAFETENSORS} or {PYTORCH_BIN} (nor a sharded index of either); "
                        "copy the model's weights files into it")


def load_pretrained(folder: Path | str, attention: str = "sdpa"):
    """A gptmeter GPT holding the weights of a local Hugging Face GPT-2 folder (any size), in float32."""
    from gpt.model import GPT

    folder = Path(folder)
    config = read_config(folder)
    config.attention = attention
    path, index, read = _open_weights(folder)
    stored = {_hf_name(name): name for name in index if not name.endswith(MASK_BUFFERS) and name != "lm_head.weight"}
    expected = hf_shapes(config)
    missing = sorted(set(expected) - set(stored))
    if missing:
        raise HFFormatError(f"{path} lacks {len(missing)} tensor(s) GPT-2 needs, e.g. {missing[0]!r}; "
                            "the file does not match its config.json")
    unexpected = sorted(set(stored) - set(expected))
    if unexpected:
        raise HFFormatError(f"{path} holds tensor {unexpected[0]!r}, which a GPT-2 of this config.json has not")
    for name, shape in expected.items():
        found, dtype = index[stored[name]]
        if found != shape:
            raise HFFormatError(f"{path}: {name} has shape {list(found)}, config.json implies {list(shape)}")
        if dtype not in FLOAT_DTYPES:
            raise HFFormatError(f"{path}: {name} is stored as {dtype}; only float32, float16 and bfloat16 load")

    with torch.device("meta"):
        model = GPT(config)
    state = {}
    for ours in model.state_dict():
        if ours != "lm_head.weight":
            tensor = read(stored[_hf_name(ours)]).to(torch.float32)
            state[ours] = _to_hf(ours, tensor).contiguous()  # the transpose is its own inverse
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # assign=True made two parameters; tie them again
    return model


# ----------------------------------------------------------------------------- export


def save_pretrained(model, folder: Path | str, eos_token: int | None = None,
                    max_shard_bytes: int | None = None) -> list[str]:
    """Write `model` as a Hugging Face GPT-2 folder (config.json + model.safetensors, float32) that
    transformers.GPT2LMHeadModel.from_pretrained loads; returns the names of the files written.
    HFFormatError for what GPT-2 cannot hold.

    With `max_shard_bytes`, weights larger than that are split as transformers splits them:
    model-0000i-of-0000n.safetensors files of at most that size (a bigger tensor gets a shard of
    its own) and model.safetensors.index.json mapping each tensor to its shard.
    """
    from safetensors.torch import save as safetensors_bytes

    config: GPTConfig = model.config
    if config.n_kv_head != config.n_head:
        raise HFFormatError(f"GPT-2 has no grouped-query attention, and this model has {config.n_kv_head} key/value "
                            f"heads for {config.n_head} query heads; export only models with n_kv_head = n_head")
    if model.lm_head.weight is not model.transformer.wte.weight:
        raise HFFormatError("GPT-2's output head is tied to its token embedding, and this model's is not")
    folder = Path(folder)
    if any((folder / name).exists() for name in (CONFIG, *(name for name, _, _ in WEIGHT_FILES))):
        raise HFFormatError(f"{folder} already holds a model; choose a new folder (nothing was overwritten)")
    tensors = {name: _to_hf(name, tensor.detach()).to(device="cpu", dtype=torch.float32).contiguous()
               for name, tensor in model.state_dict().items() if name != "lm_head.weight"}
    if not config.bias:  # GPT-2 always has biases; zeros are exactly "no bias"
        for name, shape in hf_shapes(dataclasses.replace(config, bias=True)).items():
            tensors.setdefault("transformer." + name, torch.zeros(shape))
    shards = _shards(tensors, max_shard_bytes)
    folder.mkdir(parents=True, exist_ok=True)
    names = [SAFETENSORS] if len(shards) == 1 else [f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                                                    for i in range(1, len(shards) + 1)]
    for name, shard in zip(names, shards):
        atomic_write(folder / name, lambda handle: handle.write(safetensors_bytes(shard, {"format": "pt"})))
    if len(shards) > 1:  # the index last: a folder interrupted before it holds no loadable half-model
        weight_map = {tensor: name for name, shard in zip(names, shards) for tensor in shard}
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        names.append(SAFETENSORS + ".index.json")
        atomic_write_text(folder / names[-1],
                          json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    atomic_write_text(folder / CONFIG, json.dumps(hf_config(config, eos_token), indent=2) + "\n")
    return [CONFIG, *names]


def _shards(tensors: dict[str, torch.Tensor], max_bytes: int | None) -> list[dict[str, torch.Tensor]]:
    """Tensors in order, cut into groups of at most max_bytes each (a larger tensor alone); one group without a limit."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if max_bytes is not None and shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    return shards


def hf_config(config: GPTConfig, eos_token: int | None) -> dict:
    """config.json of a GPT2LMHeadModel with this shape."""
    eos = eos_token if eos_token is not None else config.vocab_size - 1
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": LAYER_NORM_EPSILON,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "dtype": "float32",
    }
