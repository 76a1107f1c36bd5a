"""Tasks: few-shot function families, fixed splits, prompt formats and seeded sampling.

Step of the method: docs/method.md §1. A task maps inputs x to outputs y (add-k: y = x + k for
x = 1..100). A family is a set of tasks with a fixed train / held-out split (add-k held-out
k = 20, 2, 27, 16, 21). A prompt is n demonstrations ``in_pre x in_sep out_pre y out_sep`` and a
query ``in_pre x in_sep out_pre``; the answer is y of the query.

Sampling is deterministic: each (seed, kind, task) has its own ``random.Random`` seeded from
sha256("{seed}:{kind}:{task}"), queries walk a permutation of the inputs (each used once per
pass) and demonstrations are drawn without replacement from the other inputs.

Every rendered prompt keeps the character span of each part (demo i input / arrow / label /
separator, query input / arrow) so later stages map parts to tokens by offsets.
Cost: pure Python, microseconds per prompt.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from addk_interp.core.errors import AddkError
from addk_interp.core.validate import compress_ints

# --------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class PromptFormat:
    """``demo = in_pre + x + in_sep + out_pre + y + out_sep``; query ends after ``out_pre``."""

    name: str
    in_pre: str
    out_pre: str
    in_sep: str
    out_sep: str

    def __post_init__(self):
        if not self.out_pre and not self.in_sep:
            raise AddkError(f"format {self.name!r}: needs a non-empty out_pre or in_sep")
        if not self.out_sep:
            raise AddkError(f"format {self.name!r}: out_sep must be non-empty (answer end)")


FORMATS: dict[str, PromptFormat] = {
    f.name: f
    for f in [
        PromptFormat("arrow", "", "->", "", "#"),
        PromptFormat("qa", "Question:", "Answer:", "\n", "\n\n"),
        PromptFormat("io", "Input:", "Output:", "\n", "\n"),
        PromptFormat("ab", "A:", "B:", " ", "\n"),
        PromptFormat("textlabel", "text:", "label:", " ", "\n\n"),
        PromptFormat("fx", "x:", "f(x):", " ", "|"),
    ]
}


def get_format(fmt: str | PromptFormat) -> PromptFormat:
    if isinstance(fmt, PromptFormat):
        return fmt
    if fmt not in FORMATS:
        raise AddkError(f"unknown prompt format {fmt!r}; valid: {', '.join(FORMATS)}")
    return FORMATS[fmt]


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    name: str
    family: str
    k: int | None
    pairs: tuple[tuple[str, str], ...]

    @property
    def inputs(self) -> list[str]:
        return [x for x, _ in self.pairs]

    def output(self, x: str) -> str:
        return dict(self.pairs)[x]


@dataclass(frozen=True)
class TaskFamily:
    name: str
    tasks: dict[str, Task]
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    numeric: bool = True
    source: dict = field(default_factory=dict)

    def select(self, names) -> list[Task]:
        return [self.tasks[n] for n in names]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.tasks):
            h.update(name.encode())
            h.update(json.dumps(self.tasks[name].pairs).encode())
        h.update(json.dumps([self.train, self.heldout]).encode())
        return h.hexdigest()[:16]


PAPER_SPLITS = {
    "add": (range(1, 31), (20, 2, 27, 16, 21)),
    "sub": (range(0, 31), (19, 27, 12, 18, 7)),
    "mul": (range(1, 31), (16, 8, 19, 23, 20)),
}
_FUNCS = {"add": lambda x, k: x + k, "sub": lambda x, k: x - k, "mul": lambda x, k: x * k}


MAX_RANGE = 10_000  # values in one parsed range (k, shots): bounds the work before it starts


def parse_k_range(text: str) -> list[int]:
    """'1-30' / '1,2,5' / '3' / '-5--1' -> sorted unique ints."""
    out: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                i = part.index("-", 1)
                lo, hi = int(part[:i]), int(part[i + 1 :])
                if hi < lo:
                    raise AddkError(f"empty range {part!r}")
                if hi - lo + 1 > MAX_RANGE:  # decided before any allocation
                    raise AddkError(f"range {part!r} has {hi - lo + 1} values (at most {MAX_RANGE})")
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except AddkError:
            raise
        except ValueError:
            raise AddkError(f"cannot parse {part!r} as an integer or range like 1-30") from None
    if not out:
        raise AddkError(f"no values in {text!r}")
    return sorted(out)


def arithmetic_family(family: str = "add", ks=None, xs=range(1, 101), heldout=None) -> TaskFamily:
    """add / sub / mul family with the paper's fixed split (restricted to ``ks``)."""
    if family not in PAPER_SPLITS:
        raise AddkError(f"unknown task family {family!r}; valid: add, sub, mul, or a JSON file")
    valid, paper_heldout = PAPER_SPLITS[family]
    ks = list(valid) if ks is None else list(ks)
    bad = [k for k in ks if k not in valid]
    if bad:
        raise AddkError(
            f"k {compress_ints(bad)} outside the {family} family (valid k: "
            f"{min(valid)}..{max(valid)})"
        )
    xs = list(xs)
    if len(xs) < 2:
        raise AddkError("need at least two inputs per task")
    f = _FUNCS[family]
    tasks = {}
    for k in ks:
        name = f"{family}{k}"
        tasks[name] = Task(name, family, k, tuple((str(x), str(f(x, k))) for x in xs))
    held = paper_heldout if heldout is None else tuple(heldout)
    held_names = tuple(f"{family}{k}" for k in held if k in ks)
    train = tuple(n for n in tasks if n not in held_names)
    return TaskFamily(
        family,
        tasks,
        train,
        held_names,
        numeric=True,
        source={"kind": "arithmetic", "family": family, "xs": [xs[0], xs[-1]]},
    )


def load_task_file(path: str | Path) -> Task:
    """Read one ``[{"input": ..., "output": ...}, ...]`` JSON task, validating the schema."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise AddkError(f"task file not found: {p}") from None
    except IsADirectoryError:
        raise AddkError(f"task file {p} is a directory") from None
    except UnicodeDecodeError:
        raise AddkError(f"{p}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise AddkError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, list) or not data:
        raise AddkError(f"{p}: expected a non-empty list of {{'input', 'output'}} objects")
    pairs = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or set(item) != {"input", "output"}:
            raise AddkError(f"{p}: item {i} must be an object with exactly 'input' and 'output'")
        x, y = item["input"], item["output"]
        if isinstance(x, bool) or isinstance(y, bool):
            raise AddkError(f"{p}: item {i}: input and output must be strings or integers, not booleans")
        if not isinstance(x, str | int) or not isinstance(y, str | int):
            raise AddkError(f"{p}: item {i}: input and output must be strings or integers")
        x, y = str(x), str(y)
        if not x.strip() or not y.strip():
            raise AddkError(f"{p}: item {i}: empty input or output")
        pairs.append((x, y))
    seen: dict[str, str] = {}
    for x, y in pairs:
        if x in seen and seen[x] != y:
            raise AddkError(f"{p}: input {x!r} has two different outputs")
        seen[x] = y
    pairs = list(dict.fromkeys(pairs))
    if len(pairs) < 2:
        raise AddkError(f"{p}: need at least two distinct examples")
    return Task(p.stem, "json", None, tuple(pairs))


def json_family(paths, heldout=()) -> TaskFamily:
    """A family from JSON task files (or a directory of them)."""
    files: list[Path] = []
    for path in [paths] if isinstance(paths, str | Path) else paths:
        path = Path(path)
        files.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    if not files:
        raise AddkError(f"no JSON task files in {paths}")
    loaded = [load_task_file(f) for f in files]
    names = [t.name for t in loaded]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise AddkError(f"two task files define the same task name {dup} (task = file stem)")
    tasks = {t.name: t for t in loaded}
    unknown = [h for h in heldout if h not in tasks]
    if unknown:
        raise AddkError(f"held-out tasks not in the family: {unknown}")
    train = tuple(n for n in tasks if n not in heldout)
    numeric = all(_is_int(y) for t in tasks.values() for _, y in t.pairs)
    return TaskFamily(
        "json",
        tasks,
        train,
        tuple(heldout),
        numeric=numeric,
        source={"kind": "json", "files": [str(f) for f in files]},
    )


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- prompts

GROUP_BOS = "bos"


@dataclass(frozen=True)
class Example:
    """One sampled few-shot example: demonstrations, query and answer."""

    task: str
    k: int | None
    demos: tuple[tuple[str, str], ...]
    query: str
    answer: str

    def with_demos(self, demos) -> Example:
        return Example(self.task, self.k, tuple(demos), self.query, self.answer)

    def zero_shot(self) -> Example:
        return self.with_demos(())


@dataclass(frozen=True)
class Prompt:
    """Rendered text (ending where the answer starts) with the character span of every part."""

    example: Example
    text: str
    spans: tuple[tuple[str, int, int], ...]
    format: PromptFormat

    @property
    def answer(self) -> str:
        return self.example.answer

    @property
    def n_shots(self) -> int:
        return len(self.example.demos)


def render(example: Example, fmt: str | PromptFormat = "arrow") -> Prompt:
    f = get_format(fmt)
    text, spans = "", []

    def add(group: str, s: str):
        nonlocal text
        if s:
            spans.append((group, len(text), len(text) + len(s)))
            text += s

    for i, (x, y) in enumerate(example.demos):
        add(f"demo{i}_input", f.in_pre + x + f.in_sep)
        add(f"demo{i}_arrow", f.out_pre)
        add(f"demo{i}_output", y)
        add(f"demo{i}_sep", f.out_sep)
    add("query_input", f.in_pre + example.query + f.in_sep)
    add("query_arrow", f.out_pre)
    return Prompt(example, text, tuple(spans), f)


def task_rng(seed: int, kind: str, task: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{kind}:{task}".encode()).hexdigest()
    return random.Random(int(digest[:8], 16))


def sample_examples(task: Task, n: int, shots: int, *, seed: int, kind: str) -> list[Example]:
    """n examples of ``task``; queries walk seeded permutations (each once per pass)."""
    if n <= 0:
        raise AddkError(f"n must be positive, got {n}")
    inputs = task.inputs
    if shots < 0:
        raise AddkError(f"shots must be ≥ 0, got {shots}")
    if shots > len(inputs) - 1:
        raise AddkError(
            f"{shots} shots need {shots + 1} distinct inputs; task {task.name} has {len(inputs)}"
        )
    rng = task_rng(seed, kind, task.name)
    out: list[Example] = []
    while len(out) < n:
        order = inputs[:]
        rng.shuffle(order)
        for q in order:
            if len(out) == n:
                break
            others = [x for x in inputs if x != q]
            demo_x = rng.sample(others, shots)
            demos = tuple((x, task.output(x)) for x in demo_x)
            out.append(Example(task.name, task.k, demos, q, task.output(q)))
    return out


def sample_family(
    family: TaskFamily, task_names, n: int, shots: int, *, seed: int, kind: str
) -> list[Example]:
    names = list(task_names)
    if not names:
        raise AddkError("no tasks selected (empty split)")
    missing = [t for t in names if t not in family.tasks]
    if missing:
        raise AddkError(f"tasks not in family {family.name}: {missing}")
    return [
        e for t in names for e in sample_examples(family.tasks[t], n, shots, seed=seed, kind=kind)
    ]


def manifest_hash(examples) -> str:
    """Hash of a sample manifest (the exact prompts), for provenance and cache keys."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.task, e.demos, e.query, e.answer]).encode())
    return h.hexdigest()[:16]
