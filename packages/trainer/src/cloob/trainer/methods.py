"""The objectives' table without torch: names, help line and each method's own initial τ⁻¹.

The CLI reads it before anything heavy is imported; `losses` maps the same names to their modules
(and checks at import that the two lists agree), checkpoints and the exported model card name them.
"""

from __future__ import annotations

# name → what it is (the order is the --method help's)
DESCRIPTIONS: dict[str, str] = {
    "cloob": "Hopfield retrievals + InfoLOOB",
    "clip": "InfoNCE",
    "infoloob": "InfoLOOB without Hopfield",
    "hopfield_infonce": "Hopfield + InfoNCE",
    "siglip": "pairwise sigmoid loss with a learnable bias (τ⁻¹ starts at 10 unless given)",
}
METHODS = tuple(DESCRIPTIONS)
METHOD_HELP = " | ".join(f"{name} ({what})" for name, what in DESCRIPTIONS.items())

# SigLIP's initialisation (Zhai et al. 2023): logit scale ln 10, bias −10.
_OWN_INV_TAU = {"siglip": 10.0}


def default_inv_tau(method: str) -> float | None:
    """The method's own initial τ⁻¹ when the user gives none, or None for the config's default."""
    return _OWN_INV_TAU.get(method.replace("-", "_"))
