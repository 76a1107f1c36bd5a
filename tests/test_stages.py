"""The stage registry: one ordered table from which Run derives order, cache keys and the
manifest; adding a stage is one function + one registry entry."""

import json
from pathlib import Path

import pytest

from addk_interp.core.store import write_json
from addk_interp.pipeline import stages as S
from addk_interp.pipeline.run import Run, RunConfig


def test_registry_is_a_dag_in_order_with_unique_names():
    S.check_registry()
    assert S.STAGE_NAMES[0] == "clean_eval" and S.STAGE_NAMES[-1] == "aie"
    with pytest.raises(ValueError, match="do not run before it"):
        S.check_registry((S.Stage("b", "m", "f", upstream=("a",)), S.Stage("a", "m", "f")))
    with pytest.raises(ValueError, match="registered twice"):
        S.check_registry((S.Stage("a", "m", "f"), S.Stage("a", "m", "f")))
    with pytest.raises(KeyError, match="unknown stage"):
        S.stage_by_name("nope")


def test_every_stage_function_exists_and_declares_budget_keys_of_the_presets():
    import importlib

    from addk_interp.pipeline.presets import STAGE_PRESETS

    for st in S.STAGES:
        assert callable(getattr(importlib.import_module(st.module), st.function))
        for preset in STAGE_PRESETS.values():
            assert set(st.budget) <= set(preset), (st.name, set(st.budget) - set(preset))
        assert st.outputs and st.summary
        assert set(st.config_fields) <= set(RunConfig.__dataclass_fields__)


# a stage added by a user: one function (here, in this test module) + one registry entry
def count_heads(run, sdir: Path) -> list[Path]:
    sel = run.selected_heads()
    return [write_json(sdir / "count.json", {"selected": len(sel), "layer": run.layer})]


def test_adding_a_stage_is_one_function_and_one_registry_entry(tmp_path):
    extra = S.Stage(
        "count_heads", __name__, "count_heads", upstream=("localize",),
        config_fields=(*S.TASK_FIELDS, "layer"), outputs=("count.json",), summary="a count",
    )
    cfg = RunConfig(model="tiny-llama", preset="quick", k="1-6", n_eval=2, n_capture=2)
    stages = (*S.STAGES, extra)
    run = Run(cfg, tmp_path / "r", verbose=False, stages=stages)
    run.execute()
    man = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert [s["name"] for s in man["stages"]] == [*S.STAGE_NAMES, "count_heads", "report"]
    got = json.loads((tmp_path / "r" / "stages" / "count_heads" / "count.json").read_text())
    assert got["selected"] == len(run.selected_heads())
    # cached on a re-run; its key follows its upstream (localize) and config fields (layer)
    run2 = Run(cfg, tmp_path / "r", verbose=False, stages=stages)
    run2.execute()
    assert run2.stages[-2]["name"] == "count_heads" and run2.stages[-2]["status"] == "cached"
    assert run2.stage_key("count_heads") != Run(
        RunConfig(**{**cfg.to_dict(), "layer": 0}), tmp_path / "r", verbose=False, stages=stages
    ).stage_key("count_heads")


def test_a_stage_writing_an_undeclared_file_is_refused(tmp_path):
    bad = S.Stage("count_heads", __name__, "count_heads", upstream=("localize",),
                  outputs=("other.json",), summary="x")
    cfg = RunConfig(model="tiny-llama", preset="quick", k="1-6", n_eval=2, n_capture=2)
    with pytest.raises(RuntimeError, match="not declared"):
        Run(cfg, tmp_path / "r", verbose=False, stages=(*S.STAGES, bad)).execute()
