"""The model adapter: ``HookedModel`` (one place that absorbs TransformerBridge / classic
HookedTransformer differences: hook resolution, residual write sites, partial forwards, logits at
chosen positions), loaders for hub / local / GGUF / organism / tiny random models."""

from addk_interp._lazy import lazy_namespace

_EXPORTS = {
    "HookedModel": "adapter",
    "ModelInfo": "adapter",
    "load_model": "adapter",
    "from_hf": "adapter",
    "from_hooked_transformer": "adapter",
    "tiny_hf_model": "adapter",
    "tiny_tokenizer": "adapter",
    "check_device": "adapter",
    "cache_dir": "adapter",
}
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
