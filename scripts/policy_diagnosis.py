"""What the training-free policies see, layer by layer, on a run's all-BIG forward (docs/pretrained.md).

    python scripts/policy_diagnosis.py RUN [--split prose-val] [--max-tokens 1024] [--seq-len 512] [--warmup 8]

Per layer, over the predicted tokens past the first `--warmup` positions of each window:
- `cos`: the mean and 10th percentile of cos(x, x + FFN(u)), the quantity FFN-SkipLLM thresholds;
- `|x|`: the mean norm of the residual stream before the FFN, beside which the FFN's update is measured;
- the logit lens, the final norm and head applied after the layer, as confidence early exit reads it: the share of
  tokens whose largest next-token probability is at least 0.9, and how often those confident predictions are the
  token that follows (`right`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from duollm.data.corpus import eval_windows, token_array
from duollm.routing.route import Choice
from duollm.runs.load import load_run


class Watch:
    """A router that keeps every FFN BIG and records, after each layer, what FFNSkip and EarlyExit would read."""

    def __init__(self, model, ids, warmup: int):
        self.model, self.ids, self.w, self.rows = model, ids, warmup, {}

    def __call__(self, layer, u):
        return torch.full(u.shape[:2], Choice.BIG, dtype=torch.uint8, device=u.device)

    def observe(self, layer, x, y):
        cos = F.cosine_similarity(x.float(), y.float(), dim=-1)[:, self.w : -1]  # (B, T')
        conf, guess = self.model.head(y).float().softmax(-1).max(-1)  # (B, T) each
        sure = (conf >= 0.9)[:, self.w : -1]
        right = (guess[:, :-1] == self.ids[:, 1:])[:, self.w :] & sure
        self.rows[layer] = {
            "cos_mean": float(cos.mean()),
            "cos_p10": float(cos.quantile(0.1)),
            "norm_x": float(x.float().norm(dim=-1)[:, self.w : -1].mean()),
            "sure": float(sure.float().mean()),
            "right_when_sure": float(right.sum() / sure.sum().clamp(min=1)),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--split", default="prose-val")
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=8)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg, model, tok = load_run(Path(args.run), device)
    ids = eval_windows(token_array(args.split, tok), args.seq_len, args.max_tokens).to(device)
    watch = Watch(model.eval(), ids, args.warmup)
    with torch.no_grad():
        model(ids, router=watch)
    print(f"{args.run}, {args.split}: {ids.shape[0]} windows × {ids.shape[1]} tokens, all-BIG")
    print("| layer | cos mean | cos p10 | mean norm of x | max prob ≥ 0.9 | right when so |")
    print("|---|---|---|---|---|---|")
    for layer, r in sorted(watch.rows.items()):
        print(f"| {layer} | {r['cos_mean']:.3f} | {r['cos_p10']:.3f} | {r['norm_x']:.0f} | {r['sure']:.2f} | {r['right_when_sure']:.2f} |")


if __name__ == "__main__":
    main()
