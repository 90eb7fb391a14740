"""`DuoForCausalLM`: the Duo model (`duollm.model.transformer.DuoLM`, not a copy) as a transformers causal LM.

The class holds one `DuoLM` under the name `model` and adds what transformers expects of a causal LM:
`save_pretrained` / `from_pretrained` (safetensors), `generate` (greedy, sampling, beam search), a loss from
shifted `labels`, and the Auto classes (registered by `duollm.hf.register`).

Routing. Every call is routed by a policy: the `policy=` argument of `forward` or `generate`, else the
config's `policy`. A policy is a string (`all-big`, `all-small`, `random:P`, a route string like `BBS-`, or
`router:NAME`), a uint8 route tensor ((L,), or (B, T, L) for a single forward), or a router callable
`router(layer, u) → choices`. Routers saved in the folder (`routers/NAME/`, as `duollm router train` writes
them) are loaded by `from_pretrained` and written by `save_pretrained`; they are kept outside the module
tree, so the weights file holds the language model only. A `random:` policy draws from a generator seeded
with `config.seed` at the start of each call (a whole `generate` is one call), so results repeat.

KV cache. DuoLM's attention takes `kv = (k_buf, v_buf, pos)` per layer: it writes the new keys and values
at positions pos.. of the buffers and attends to everything up to there. `CacheView` presents a
transformers `DynamicCache` that way: for layer l it appends zeros for the new tokens to the cache
(`cache.update`, the public API), which returns the cache's own tensors, and hands them to the attention,
which then writes the real keys and values over the zeros in place. So the HF path runs exactly DuoLM's
code with exactly DuoLM's cache layout, and beam search, cropping and cache reuse are transformers' own.
Padding: a batch padded on the left (transformers' `attention_mask` with zeros, as `generate` passes it for
prompts of different lengths) runs through DuoLM's own `attention_mask` (`model.transformer.padding`): each
sequence gets the positions and the attention it would have alone.

transformers renamed `past_key_values` to `cache` in 5.2x; `forward` accepts both names, and its output uses
the one the installed version has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import DynamicCache, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from duollm.eval.policy import parse_policy
from duollm.hf.config import DuoLMConfig
from duollm.model.transformer import DuoLM, rope_tables
from duollm.routers.storage import load_router, save_router
from duollm.routing.sample import RandomRouter

# the output's field for the cache: `cache` in newer transformers 5, `past_key_values` before
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


@dataclass
class DuoCausalLMOutput(CausalLMOutputWithPast):
    """transformers' causal-LM output (loss, logits (B, T, V), the cache), and the route every token took."""

    route: Tensor | None = None  # (L,) or (B, T, L) uint8, as applied


class CacheView:
    """duollm's KVCache interface (`pos`, `layer(l)`) over a transformers Cache, for one forward of T tokens."""

    def __init__(self, cache: DynamicCache, input_ids: Tensor, model: DuoLM):
        if not isinstance(cache, DynamicCache):
            raise ValueError(f"Duo models decode with a DynamicCache (the default), not {type(cache).__name__}")
        cfg, p = model.cfg, model.embed.weight
        self.cache, self.pos = cache, cache.get_seq_length()
        B, T = input_ids.shape
        self.new = dict(size=(B, cfg.n_kv_head, T, cfg.d_model // cfg.n_head), dtype=p.dtype, device=p.device)

    def layer(self, l: int) -> tuple[Tensor, Tensor, int]:
        """Layer l's keys and values (B, nkv, pos+T, hs): the cached ones, then room the attention writes into."""
        k, v = self.cache.update(torch.zeros(**self.new), torch.zeros(**self.new), l)  # two tensors: the first update keeps them
        return k, v, self.pos


class DuoForCausalLM(PreTrainedModel, GenerationMixin):
    """A Duo model for transformers: `AutoModelForCausalLM.from_pretrained(dir)` gives one of these."""

    config_class = DuoLMConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]
    _supports_sdpa = True  # the attention is PyTorch SDPA, always

    def __init__(self, config: DuoLMConfig):
        super().__init__(config)
        self.model = DuoLM(config.duo_config())  # initialises its own weights (DuoLM.reset_parameters)
        self.routers: dict[str, tuple[torch.nn.Module, dict]] = {}  # name → (router, its JSON); not submodules
        self._routing: dict | None = None  # the policy of the generate call in progress, resolved once
        self.post_init()

    def _init_weights(self, module) -> None:
        """DuoLM initialises its weights itself; only the RoPE tables (buffers not in the file) are rebuilt here,
        for the case where transformers built the model on the meta device before loading the weights."""
        if isinstance(module, DuoLM):
            cfg = module.cfg
            cos, sin = rope_tables(cfg.max_seq_len, cfg.d_model // cfg.n_head, cfg.rope_theta)
            module.rope_cos.copy_(cos), module.rope_sin.copy_(sin)

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.model.embed

    def set_input_embeddings(self, value: torch.nn.Embedding) -> None:
        self.model.embed = value  # a tied output head reads the same weight (DuoLM.output_weight)

    def get_output_embeddings(self) -> torch.nn.Linear | None:
        """The separate output head of an untied model; None when tied (the head is the input embedding)."""
        return self.model.lm_head

    # ------------------------------------------------------------------ routing

    def routing(self, policy=None) -> dict:
        """`{"route": tensor}` or `{"router": callable}` for DuoLM.forward, from `policy` (see the module doc)."""
        if policy is None:
            if self._routing is not None:  # inside generate: one resolved policy for every step
                return self._routing
            policy = self.config.policy
        if isinstance(policy, Tensor):
            return {"route": policy}
        if callable(policy):
            return {"router": policy}
        if not isinstance(policy, str):
            raise ValueError(f"a policy is a string, a uint8 route tensor or a router, not {type(policy).__name__}")
        if policy.startswith("router:"):
            name = policy[len("router:") :]
            if name not in self.routers:
                raise ValueError(f"no router {name!r} in this model (have: {', '.join(sorted(self.routers)) or 'none'})")
            return {"router": self.routers[name][0].to(self.device)}
        pol = parse_policy(policy, self.config.n_layer)
        if pol.route is not None:
            return {"route": pol.route}
        if pol.router is not None:  # a training-free method (skipllm:, exit:): a router of its own
            return {"router": pol.router}
        return {"router": RandomRouter(pol.p, torch.Generator().manual_seed(self.config.seed))}

    # ------------------------------------------------------------------ forward and generate

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        cache: DynamicCache | None = None,
        past_key_values: DynamicCache | None = None,
        use_cache: bool | None = None,
        labels: Tensor | None = None,
        policy=None,
        **kwargs,
    ) -> DuoCausalLMOutput:
        """`input_ids` (B, T); `labels` (B, T) as in transformers (shifted here, -100 ignored); `cache` (or
        `past_key_values`): a DynamicCache the tokens continue; `policy`: this call's routing (module doc).
        Other transformers arguments (position_ids, return_dict, ...) are accepted and ignored."""
        pad = attention_mask if attention_mask is not None and not bool(attention_mask.all()) else None  # left padding
        cache = cache if cache is not None else past_key_values
        if cache is None and (self.config.use_cache if use_cache is None else use_cache):
            cache = DynamicCache()
        view = CacheView(cache, input_ids, self.model) if cache is not None else None
        out = self.model(input_ids, cache=view, attention_mask=pad, **self.routing(policy))  # logits (B, T, V)
        loss = None
        if labels is not None:
            logits = out.logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
            loss = F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten().to(logits.device), ignore_index=-100)
        return DuoCausalLMOutput(loss=loss, logits=out.logits, route=out.route, **{CACHE_FIELD: cache})

    def generate(self, *args, policy=None, **kwargs):
        """transformers' `generate`, routed by `policy` (default: the config's) for every token of this call."""
        self._routing = self.routing(policy)  # resolved once: a random policy draws from one generator throughout
        try:
            return super().generate(*args, **kwargs)
        finally:
            self._routing = None

    # ------------------------------------------------------------------ routers in the folder

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' `save_pretrained`, then each router as `routers/NAME/router.{safetensors,json}`."""
        super().save_pretrained(save_directory, *args, **kwargs)
        for name, (router, info) in self.routers.items():
            save_router(router, Path(save_directory) / "routers" / name, info)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' `from_pretrained`, then the routers of a local folder's `routers/`."""
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        _own_aligned_memory(model)
        folder = Path(str(pretrained_model_name_or_path)) / "routers"
        if folder.is_dir():
            model.load_routers(folder)
        if model.config.policy.startswith("router:"):
            model.routing()  # fail now, naming the routers there are, rather than at the first call
        return model

    def load_routers(self, folder: Path) -> None:
        """Load every `folder/NAME/` written by `save_router` into `self.routers`."""
        for sub in sorted(Path(folder).iterdir()):
            if (sub / "router.json").exists():
                router, info = load_router(sub)
                self.routers[sub.name] = (router.eval(), info)


def _own_aligned_memory(model: torch.nn.Module) -> None:
    """Move every CPU parameter and buffer that does not start on a 64-byte boundary into memory of its own.

    transformers 5 (seen with 5.24) can hand back the loaded tensors at 8-byte offsets (the alignment of a
    safetensors file's data). On the CPU a matrix-vector product, what a module with one routed row runs, takes
    another code path for a weight that is not 64-byte aligned and rounds differently (about 1e-6 in the
    logits), so a loaded model would not compute bit for bit what the saved one did. Tensors torch allocates
    itself are 64-byte aligned; a copy costs one pass over the weights, once, at load time.
    """
    with torch.no_grad():
        for t in (*model.parameters(), *model.buffers()):
            if t.device.type == "cpu" and t.data_ptr() % 64:
                t.data = t.data.clone()
