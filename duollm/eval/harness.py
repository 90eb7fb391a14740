"""An lm-evaluation-harness model: score a Duo run on the harness's tasks under any routing policy.

lm-eval (0.4.x) is an optional extra, not a dependency: `pip install 'lm-eval>=0.4,<0.5'`. Importing this
module without it raises a DuoError saying so. Importing it registers the model name `duollm`:
    import duollm.eval.harness, lm_eval
    lm_eval.simple_evaluate(model="duollm", model_args="run=runs/t,policy=BS-B", tasks=["arc_easy"])
    lm_eval.simple_evaluate(model=DuoHarnessLM(run="runs/t", policy="random:0.5,0.3,0.2"), tasks=[...])

(a policy with commas goes through the object form: the harness splits `model_args` at commas).

The harness asks three things; each runs on duollm's own model:
- `loglikelihood(context, continuation)`: `score_continuations` of eval/mc.py, the same scoring as `duollm mc`,
  `batch_size` requests at a time (longest first, so that a batch pads little; the answers come back in the
  requests' order). Padding goes after each sequence, where causal attention cannot see it, so a static policy or
  a router scores a request the same in any batch; a random policy draws its routes batch by batch;
- `loglikelihood_rolling(text)`: the text after `<|endoftext|>`, in windows of the model's length, each
  window scoring the tokens the previous ones did not (every token predicted once, with the most context);
- `generate_until(context, {"until": [...], "max_gen_toks": n})`: greedy decoding with duollm's
  `generate` under the policy, cut at the first stop string.
"""

from __future__ import annotations

from pathlib import Path

import torch

from duollm.errors import DuoError
from duollm.eval.mc import encode_pair, score_continuations
from duollm.eval.policy import run_policy
from duollm.model.decode import generate
from duollm.runs.load import load_run

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError:
    raise DuoError("the lm-evaluation-harness adapter needs lm-eval: pip install 'lm-eval>=0.4,<0.5'") from None


@register_model("duollm")
class DuoHarnessLM(LM):
    """A duollm run (`run=`) under a policy (`policy=`) as an lm-eval model."""

    def __init__(
        self, run: str, policy: str = "all-big", seed: int = 0, device: str | None = None, batch_size: int | str = 32, **_harness_options
    ):
        super().__init__()

        self.device_name = device or ("cuda" if torch.cuda.is_available() else "cpu")
        _, self.model, self.tok = load_run(Path(run), self.device_name)
        self.policy = run_policy(Path(run), policy, self.model, self.device_name)
        self.gen = torch.Generator().manual_seed(int(seed))  # random policies draw from here, request after request
        self.decode_args = self.policy.decode_args(self.gen)  # how `generate` takes it
        # the harness passes its --batch_size through (a number, or "auto", which keeps the default)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() and int(batch_size) > 0 else 32

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = [encode_pair(self.tok, *req.args) for req in requests]
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))  # longest first
        out: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
        for s in range(0, len(order), self.batch_size):
            batch = order[s : s + self.batch_size]
            logp, greedy = score_continuations(self.model, [pairs[i] for i in batch], self.policy, self.gen)
            for j, i in enumerate(batch):
                out[i] = (float(logp[j]), bool(greedy[j]))
        return out

    def loglikelihood_rolling(self, requests) -> list[float]:
        T = self.model.cfg.max_seq_len
        out = []
        for req in requests:
            ids = [self.tok.eos_id] + self.tok.encode_batch([req.args[0]])[0]  # (n+1,): predict all n text tokens
            total, done = 0.0, 1  # tokens ids[1:done] are scored
            while done < len(ids):
                end = min(done + T - 1, len(ids))
                start = max(0, end - T)  # the window ids[start:end] ends at the last new token, full context
                pair = (ids[start:done], ids[done:end])
                total += float(score_continuations(self.model, [pair], self.policy, self.gen)[0][0])
                done = end
            out.append(total)
        return out

    def generate_until(self, requests) -> list[str]:
        T = self.model.cfg.max_seq_len
        out = []
        for req in requests:
            context, kwargs = req.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            n = int(kwargs.get("max_gen_toks", 256))
            ids = (self.tok.encode_batch([context])[0] or [self.tok.eos_id])[-(T - 1) :]
            n = max(1, min(n, T - len(ids)))
            x = torch.tensor([ids], device=self.device_name)
            text = self.tok.decode(generate(self.model, x, n, **self.decode_args).ids[0, len(ids) :].tolist())
            cut = min([text.find(s) for s in until if s in text], default=len(text))
            out.append(text[:cut])
        return out
