"""The generation of `duollm generate`: continue a prompt with a trained run under any routing policy.

    duollm generate --run RUN --prompt "In the beginning" --policy router:paper-0.5 --max-new-tokens 40

Prints the text and how much of each module the generated tokens used; `--json` gives the text, the token
ids and one route string per generated token. Several prompts (`--prompt` lines separated by `\\n` in a
file given with `--prompts FILE`) are generated together as one batch when they have the same length in
tokens, else one after another. On a GPU, static routes and the paper's router decode through CUDA graphs
(`model/decode.py` `Decoder`); other policies through the readable reference, with the same tokens.

`--run` may also name an arena entrant's folder (`OUT/entrants/<label>-seed<s>/`, docs/arena.md): the entrant then
decodes greedily through its own cache under its own causal routing (`methods.greedy`), `--policy` is not used,
and the result gives its FLOPs per generated token (from one forward over the whole sequence: decoding equals it).

`--speculate ROUTE` decodes greedily by self-speculation (model/speculate.py): the draft route (B/S/- letters, whose
last ones may be `.`: an early exit, those layers not run) proposes
`--draft-tokens` tokens a round and all-BIG keeps the prefix it agrees with, so the text is all-BIG's greedy text;
each result adds `speculation` (rounds, drafted, accepted, acceptance, flops, flops_all_big). One prompt at a time,
greedy and all-BIG only (`--policy`, `--temperature` and `--top-k` are refused with it). On a GPU through the
recorded fast path (`SpeculativeDecoder`), elsewhere through the reference, with the same tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from duollm.data.tokenizer import load_tokenizer
from duollm.errors import DuoError
from duollm.eval.policy import run_policy
from duollm.extras import require
from duollm.flags import Count, NonNegative, Positive
from duollm.methods import ENTRANT_FILE, SOURCE_FILE, greedy, load_entrant
from duollm.model.decode import Decoder, generate
from duollm.model.speculate import SpeculativeDecoder, speculative_greedy
from duollm.routers import LinearRouter
from duollm.routing.route import Choice, format_route, parse_route
from duollm.runs.load import load_run


@dataclass
class GenerateSpec:
    """The settings of `run_generate`: the run, the prompts, the policy and the sampling."""

    run: str  # run directory (from duollm train)
    prompt: str = ""  # text to continue ...
    prompts: str = ""  # ... or a file with one prompt per line ...
    chat: str = ""  # ... or a user message, put in the run's chat template (a run of duollm import); the answer ends with its turn
    policy: str = "all-big"  # all-big, all-small, random:P, a route string like BS-B, router:NAME, skipllm:T, exit:T (docs/policies.md)
    max_new_tokens: Positive = 40
    temperature: NonNegative = 0.0  # 0 = greedy
    top_k: Count = 0  # sample from the k most likely tokens; 0 = all
    seed: Count = 0  # sampling and random policies
    speculate: str = ""  # a draft route (B/S/- letters, trailing `.` = early exit; all-small): speculative greedy, checked by all-BIG
    draft_tokens: Positive = 4  # with --speculate: drafts per round


def policy_args(text: str, run: Path, model, device: str, gen: torch.Generator) -> dict:
    """{"route": (L,)} or {"router": callable} for `generate`, from a policy string."""
    return run_policy(run, text, model, device).decode_args(gen)


def chat_prompt(tokenizer_file: Path, message: str) -> tuple[str, str | None]:
    """(`message` as the user's turn in the chat template of the tokenizer folder holding `tokenizer_file`, with the
    assistant's turn opened; the token that ends a turn). transformers renders the template (its Jinja)."""
    require("hf", "duollm generate --chat")
    from transformers import AutoTokenizer  # the optional hf extra, checked just above

    folder = tokenizer_file.parent
    if not (folder / "tokenizer_config.json").is_file():
        raise DuoError(f"the run's tokenizer ({tokenizer_file}) has no chat template: --chat is for runs of chat models (duollm import)")
    hf = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if not hf.chat_template:
        raise DuoError(f"the run's tokenizer ({folder}) has no chat template: --chat is for runs of chat models (duollm import)")
    text = hf.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True, tokenize=False)
    return text, hf.eos_token


def run_generate(cmd: GenerateSpec) -> list[dict]:
    if (Path(cmd.run) / ENTRANT_FILE).is_file():
        return run_entrant(cmd)
    if cmd.max_new_tokens < 1:
        raise DuoError(f"--max-new-tokens must be >= 1, got {cmd.max_new_tokens}")
    if sum(map(bool, (cmd.prompt, cmd.prompts, cmd.chat))) != 1:
        raise DuoError("give --prompt TEXT or --prompts FILE or --chat TEXT (one of them)")
    texts = [cmd.prompt or cmd.chat] if not cmd.prompts else [t for t in Path(cmd.prompts).read_text().splitlines() if t.strip()]
    if not texts:
        raise DuoError(f"{cmd.prompts} holds no prompt")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg, model, tok = load_run(Path(cmd.run), device)
    stop = None  # the token that ends an answer's turn (chat only)
    if cmd.chat:
        text, end = chat_prompt(Path(cfg.data.tokenizer), cmd.chat)
        texts, end_ids = [text], tok.encode_batch([end])[0] if end else []
        stop = end_ids[0] if len(end_ids) == 1 else None  # one special token, as chat templates have it
    gen = torch.Generator().manual_seed(cmd.seed)
    pol = policy_args(cmd.policy, Path(cmd.run), model, device, gen)
    encoded = tok.encode_batch(texts)
    if any(len(e) == 0 for e in encoded):
        raise DuoError("a prompt encodes to no tokens")
    if max(len(e) for e in encoded) + cmd.max_new_tokens > cfg.model.max_seq_len:
        raise DuoError(f"prompt + --max-new-tokens exceeds the model's max_seq_len {cfg.model.max_seq_len}")
    if cmd.speculate:
        return speculate(cmd, model, tok, texts, encoded, stop, device)
    results = []
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(encoded):  # prompts of one length go together as one batch
        groups.setdefault(len(e), []).append(i)
    decoder = None
    if device == "cuda" and ("route" in pol or isinstance(pol["router"], LinearRouter)):  # policies tested in graphs
        longest = max(groups) + cmd.max_new_tokens - 1
        decoder = Decoder(model, max(len(m) for m in groups.values()), longest, **pol)  # CUDA graphs, reused by every group
    for n, members in groups.items():
        ids = torch.tensor([encoded[i] for i in members], device=device)  # (b, n)
        sampling = dict(temperature=cmd.temperature, top_k=cmd.top_k, gen=gen)
        out = (
            decoder.generate(ids, cmd.max_new_tokens, **sampling)
            if decoder
            else generate(model, ids, cmd.max_new_tokens, **sampling, **pol)
        )
        for row, i in enumerate(members):
            new = out.ids[row, n:].tolist()
            routes = out.route[row, n - 1 :].cpu()  # (max_new, L): routes of the tokens whose outputs were the new ones
            if stop in new:  # the answer's turn ended: what follows is not part of it
                new, routes = new[: new.index(stop)], routes[: new.index(stop) + 1]
            results.append(
                {
                    "prompt": texts[i],
                    "text": tok.decode(new),
                    "tokens": new,
                    "routes": [format_route(r) for r in routes],
                    "realized": {c.name.lower(): float((routes == c).float().mean()) for c in Choice},
                    "index": i,
                }
            )
    results.sort(key=lambda r: r.pop("index"))
    return results


def draft_route(text: str, n_layer: int) -> tuple[Tensor, int | None]:
    """The draft of --speculate: `all-small`, `all-big` or a route string of n_layer B/S/- letters, whose last letters
    may be `.` (layers not run: an early exit after the others). Returns (route (L,) uint8, its depth or None)."""
    letters = {"all-small": "S" * n_layer, "all-big": "B" * n_layer}.get(text, text)
    depth = len(letters.rstrip("."))
    if "." in letters[:depth] or depth == 0:
        raise DuoError(f"--speculate: '.' (a layer not run) only ends a route, after at least one layer run; got {text!r}")
    if sorted(set(letters) - set("BS-.")):
        raise DuoError(f"--speculate: bad route string {text!r}: use B (big), S (small), - (skip) per layer, and trailing . (not run)")
    if len(letters) != n_layer:
        raise DuoError(f"--speculate: route string {text!r} has {len(letters)} layers, the model has {n_layer}")
    route = parse_route(letters[:depth] + "-" * (len(letters) - depth), n_layer)  # the layers not run: never read
    return route, (depth if depth < n_layer else None)


def speculate(cmd: GenerateSpec, model, tok, texts: list[str], encoded: list[list[int]], stop, device: str) -> list[dict]:
    """Each prompt continued by self-speculative greedy decoding (model/speculate.py), one prompt at a time."""
    if cmd.policy != "all-big" or cmd.temperature > 0 or cmd.top_k:
        raise DuoError("--speculate decodes all-BIG's greedy text: leave out --policy, --temperature and --top-k")
    draft, depth = draft_route(cmd.speculate, model.cfg.n_layer)
    fast = None
    if device == "cuda":  # the recorded fast path, one decoder for every prompt (same tokens as the reference)
        fast = SpeculativeDecoder(model, max(map(len, encoded)) + cmd.max_new_tokens, draft, cmd.draft_tokens, fuse=True, depth=depth)
    results = []
    for text, e in zip(texts, encoded, strict=True):
        ids = torch.tensor([e], device=device)  # (1, n)
        if fast is not None:
            seq, stats = fast.generate(ids, cmd.max_new_tokens)
        else:
            seq, stats = speculative_greedy(model, ids, cmd.max_new_tokens, draft, cmd.draft_tokens, depth=depth)
        new = seq[0, len(e) :].tolist()
        if stop in new:
            new = new[: new.index(stop)]
        big = [format_route(torch.full((model.cfg.n_layer,), Choice.BIG, dtype=torch.uint8))] * len(new)
        stats = {"draft": format_route(draft)[:depth] + "." * (len(draft) - (depth or len(draft))), "k": cmd.draft_tokens, **stats}
        realized = {c.name.lower(): float(c == Choice.BIG) for c in Choice}
        results.append({"prompt": text, "text": tok.decode(new), "tokens": new, "routes": big, "realized": realized, "speculation": stats})
    return results


@torch.no_grad()
def run_entrant(cmd: GenerateSpec) -> list[dict]:
    """Greedy continuations of the prompts by an arena entrant (a folder `save_entrant` wrote, with source.json)."""
    folder = Path(cmd.run)
    if cmd.chat or cmd.temperature > 0 or cmd.top_k or cmd.speculate or cmd.policy != "all-big":
        raise DuoError(
            "an arena entrant decodes greedily under its own routing: give --prompt or --prompts, without --chat, "
            "--temperature, --top-k, --speculate or --policy"
        )
    if not (folder / SOURCE_FILE).is_file():
        raise DuoError(f"{folder} has no {SOURCE_FILE}: it names the entrant's tokenizer (duollm arena writes it)")
    if sum(map(bool, (cmd.prompt, cmd.prompts))) != 1:
        raise DuoError("give --prompt TEXT or --prompts FILE (one of them)")
    texts = [cmd.prompt] if cmd.prompt else [t for t in Path(cmd.prompts).read_text().splitlines() if t.strip()]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_entrant(folder, device).eval()
    tok = load_tokenizer(json.loads((folder / SOURCE_FILE).read_text())["tokenizer"])
    results = []
    for text in texts:  # one prompt at a time: entrants' caches hold no padding
        ids = torch.tensor([tok.encode_batch([text])[0]], device=device)  # (1, n)
        if ids.shape[1] == 0:
            raise DuoError("a prompt encodes to no tokens")
        if ids.shape[1] + cmd.max_new_tokens > model.cfg.max_seq_len:
            raise DuoError(f"prompt + --max-new-tokens exceeds the model's max_seq_len {model.cfg.max_seq_len}")
        seq = greedy(model, ids, cmd.max_new_tokens)  # (1, n + new)
        n = ids.shape[1]
        flops = model(seq[:, :-1]).flops[0, n - 1 :]  # (new,): the positions whose outputs were the new tokens
        new = seq[0, n:].tolist()
        results.append(
            {"prompt": text, "text": tok.decode(new), "tokens": new, "flops_per_token": float(flops.mean()), "method": model.method}
        )
    return results
