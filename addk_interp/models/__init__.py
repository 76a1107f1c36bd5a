"""The model adapter: ``HookedModel`` (one place that absorbs TransformerBridge / classic
HookedTransformer differences: hook resolution, residual write sites, partial forwards, logits at
chosen positions), loaders for hub / local / GGUF / organism / tiny random models."""

from addk_interp._lazy import lazy_namespace

_EXPORTS = {
    "HookedModel": "adapter",
    "ModelInfo": "adapter",
    "load_model": "loading",
    "from_hf": "loading",
    "from_hooked_transformer": "loading",
    "tiny_hf_model": "tiny",
    "tiny_tokenizer": "tiny",
    "UpperForward": "partial",
}
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
