import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from jaxtyping import install_import_hook  # noqa: E402

# every jaxtyping shape annotation in the library is checked by beartype during the tests
_hook = install_import_hook("addk_interp", "beartype.beartype")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TINY = ["tiny-llama", "tiny-llama-gqa", "tiny-gemma3", "tiny-hooked"]
_CACHE = {}


def tiny(spec, dtype=torch.float32):
    from addk_interp.models.loading import load_model

    key = (spec, dtype)
    if key not in _CACHE:
        _CACHE[key] = load_model(spec, dtype=dtype)
    return _CACHE[key]


@pytest.fixture(params=TINY)
def tiny_model(request):
    return tiny(request.param)
