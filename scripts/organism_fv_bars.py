"""The four organism-fv bars measured independently of the toolkit's pipeline: plain Hugging
Face forward hooks on fresh seeded prompts (``recipe_fv.measure_bars``; first-token accuracy).

    python scripts/organism_fv_bars.py [CHECKPOINT_DIR] [SEED]

The toolkit's own measurements (exact match with the terminator check) are the README's
``addk-interp eval`` / ``fv`` / ``run`` commands; this script is the cross-check.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from addk_interp.organism.recipe_fv import (  # noqa: E402
    BARS_SEED,
    CHECKPOINT_FV_DIR,
    load_manifest_fv,
    load_organism_fv,
    measure_bars,
)


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    ck = argv[0] if argv else str(CHECKPOINT_FV_DIR)
    seed = int(argv[1]) if len(argv) > 1 else BARS_SEED
    model, tok = load_organism_fv(ck)
    gt = load_manifest_fv(ck)["ground_truth"]
    t0 = time.time()
    b = measure_bars(model, tok, layer=gt["fv_layer"], heads=[h for _, h in gt["fv_heads"]], seed=seed)
    short = {k: v.get("pass") for k, v in b.items() if isinstance(v, dict) and "pass" in v}
    print("pass:", json.dumps(short))
    print("bar1 5-shot by k:", {k: round(v, 2) for k, v in b["bar1"]["five_shot_by_k"].items()})
    print("bar1 0-shot:", round(b["bar1"]["zero_shot"], 3))
    print("bar2:", json.dumps({k: v for k, v in b["bar2"].items() if not isinstance(v, dict)}))
    print("bar3:", json.dumps(b["bar3"]))
    print("bar4:", json.dumps(b["bar4"])[:2000])
    print(f"seconds {time.time() - t0:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
