"""The scoring of `duollm mc`: multiple-choice accuracy of a run under a routing policy, offline (ARC / HellaSwag style).

    duollm mc --run runs/t --data arc.jsonl --policy BS-B --json

The data is a JSONL file, one question per line: `{"context": str, "choices": [str, ...], "label": int}`.
Each choice is scored as a continuation of the context, the way lm-evaluation-harness does it: whitespace
at the end of the context moves to the front of the choice; `context + choice` is encoded, and the choice's
tokens are those past the context's own encoding; the score is the sum of their log-probabilities under the
policy (the context and the choice go through the model together, routed token by token like any text).
- `acc`: the highest score is the label;
- `acc_norm`: the highest score per character of the choice is the label (long answers are not penalised).

All choices of a question run as one batch, right-padded (padding comes after every scored token, so a
causal model never sees it). A context longer than the model's window loses its start. `random:` policies
draw from a generator seeded with `--seed` plus the question's index, so a question's score repeats.
`score_continuations` is the core, shared with the lm-evaluation-harness adapter (eval/harness.py).
Results go to `RUN/evals/mc__DATA__POLICY.json` (the summary and each question's scores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from duollm.errors import DuoError
from duollm.eval.policy import Policy, run_policy
from duollm.files import write_json
from duollm.flags import Count
from duollm.runs.load import load_run


@dataclass
class MCSpec:
    """The settings of `evaluate_mc`: the run, the questions and the policy."""

    run: str  # run directory (from duollm train)
    data: str  # JSONL file, one {"context": str, "choices": [str, ...], "label": int} per line
    policy: str = "all-big"  # all-big, all-small, random:P, a route string like BBSS (B/S/- per layer), router:NAME, skipllm:T, exit:T
    max_examples: Count = 0  # score at most this many questions; 0 = all
    seed: Count = 0  # for random policies


@dataclass
class Question:
    context: str
    choices: list[str]
    label: int


def read_questions(path: Path) -> list[Question]:
    """The questions of a JSONL file; DuoError naming the file and line of the first bad one."""
    path = Path(path)
    if not path.is_file():
        raise DuoError(f"data file not found: {path}")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            q = Question(row["context"], list(row["choices"]), int(row["label"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise DuoError(f"{path}:{n}: expected {{'context': str, 'choices': [str, ...], 'label': int}}") from None
        if not isinstance(q.context, str) or len(q.choices) < 2 or not all(isinstance(c, str) and c for c in q.choices):
            raise DuoError(f"{path}:{n}: needs a context string and at least two non-empty choice strings")
        if not 0 <= q.label < len(q.choices):
            raise DuoError(f"{path}:{n}: label {q.label} is not the index of a choice (0..{len(q.choices) - 1})")
        out.append(q)
    if not out:
        raise DuoError(f"{path} holds no question")
    return out


def encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-evaluation-harness splits them; an empty context becomes `[eos]`."""
    spaces = len(context) - len(context.rstrip())
    if spaces:  # "Answer: " + "B" → "Answer:" + " B", how the text was tokenized in training
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole, ctx = tok.encode_batch([context + continuation, context])
    if not ctx:
        return [tok.eos_id], whole
    return ctx, whole[len(ctx) :]


@torch.no_grad()
def score_continuations(model, pairs: list[tuple[list[int], list[int]]], policy: Policy, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Sum of log-probabilities of each continuation after its context, and whether it is the greedy one.

    `pairs`: (context ids, continuation ids), run as one right-padded batch. Returns (N,) float64 and (N,) bool."""
    model.eval()
    device = next(model.parameters()).device
    T_max = model.cfg.max_seq_len
    rows, spans = [], []
    for ctx, cont in pairs:
        if not cont:
            raise DuoError("a choice encodes to no tokens")
        if len(cont) >= T_max:
            raise DuoError(f"a choice of {len(cont)} tokens does not fit the model's window ({T_max}) after a context")
        seq = (ctx + cont)[-T_max:]  # a long context loses its start
        rows.append(seq)
        spans.append((len(seq) - len(cont), len(seq)))  # positions of the continuation's tokens
    T = max(len(r) for r in rows)
    x = torch.tensor([r + [r[-1]] * (T - len(r)) for r in rows], device=device)  # (N, T), right-padded
    if policy.router is not None:
        logits = model(x, router=policy.router).logits
    else:
        logits = model(x, route=policy.routes(x.shape[0], T, model.cfg.n_layer, gen)).logits  # (N, T, V)
    logp = logits.float().log_softmax(-1)  # (N, T, V)
    scores, greedy = [], []
    for i, (a, b) in enumerate(spans):
        pred = logp[i, a - 1 : b - 1]  # (n, V): position t predicts token t+1
        target = x[i, a:b]  # (n,)
        scores.append(pred.gather(-1, target[:, None]).sum().double())
        greedy.append(bool((pred.argmax(-1) == target).all()))
    return torch.stack(scores).cpu(), torch.tensor(greedy)


def score_questions(model, tok, questions: list[Question], policy: Policy, seed: int = 0) -> list[dict]:
    """Per question: the log-probability of each choice, the predicted index by `acc` and by `acc_norm`."""
    out = []
    for i, q in enumerate(questions):
        pairs = [encode_pair(tok, q.context, c) for c in q.choices]
        logp, _ = score_continuations(model, pairs, policy, torch.Generator().manual_seed(seed + i))
        norm = logp / torch.tensor([len(c) for c in q.choices], dtype=torch.float64)  # per character
        out.append(
            {
                "label": q.label,
                "logprobs": [round(v, 5) for v in logp.tolist()],
                "pred": int(logp.argmax()),
                "pred_norm": int(norm.argmax()),
            }
        )
    return out


def accuracy(rows: list[dict]) -> dict:
    n = len(rows)
    return {
        "examples": n,
        "acc": round(sum(r["pred"] == r["label"] for r in rows) / n, 5),
        "acc_norm": round(sum(r["pred_norm"] == r["label"] for r in rows) / n, 5),
    }


def evaluate_mc(cmd: MCSpec) -> dict:
    """Score the questions and save `RUN/evals/mc__DATA__POLICY.json`; returns the summary."""
    if cmd.max_examples < 0:
        raise DuoError(f"--max-examples must be >= 0, got {cmd.max_examples}")
    questions = read_questions(Path(cmd.data))[: cmd.max_examples or None]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    _, model, tok = load_run(Path(cmd.run), device)
    policy = run_policy(Path(cmd.run), cmd.policy, model, device)
    rows = score_questions(model, tok, questions, policy, cmd.seed)
    res = {"policy": cmd.policy, "data": str(cmd.data), **accuracy(rows)}
    folder = Path(cmd.run) / "evals"
    folder.mkdir(exist_ok=True)
    name = f"mc__{Path(cmd.data).stem}__{cmd.policy.replace(':', '_')}.json"
    write_json(folder / name, {**res, "questions": rows}, indent=None)
    return res
