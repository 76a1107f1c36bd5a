"""The lowest layer: add-k tasks and prompt formats, tokenized prompt batches, scoring, the
``Head`` type, errors and the fingerprinted artifact store. Imports nothing above it."""

from addk_interp._lazy import lazy_namespace

_EXPORTS = {
    "AddkError": "errors",
    "check_count": "validate",
    "check_seed": "validate",
    "Head": "heads",
    "HeadLike": "heads",
    "head_str": "heads",
    "parse_heads": "heads",
    "unique_heads": "heads",
    "Example": "tasks",
    "Prompt": "tasks",
    "PromptFormat": "tasks",
    "TaskFamily": "tasks",
    "FORMATS": "tasks",
    "arithmetic_family": "tasks",
    "json_family": "tasks",
    "sample_family": "tasks",
    "sample_examples": "tasks",
    "render": "tasks",
    "get_format": "tasks",
    "parse_k_range": "tasks",
    "Encoded": "prompts",
    "PromptBatch": "prompts",
    "encode": "prompts",
    "encode_examples": "prompts",
    "make_batches": "prompts",
    "accuracy_table": "scoring",
    "bootstrap_ci": "scoring",
    "evaluate": "scoring",
    "greedy_decode": "scoring",
    "greedy_correct": "scoring",
    "score_batch": "scoring",
    "read_json": "store",
    "write_json": "store",
    "read_tensors": "store",
    "write_tensors": "store",
    "write_table": "store",
    "atomic_write_text": "store",
    "stage_json": "store",
}
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS, globals())
__all__ = sorted(_EXPORTS)
