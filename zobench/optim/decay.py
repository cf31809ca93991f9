"""Which parameters get weight decay: not biases and not normalization weights (MeZO, HF Trainer)."""


def decays(name: str) -> bool:
    lowered = name.lower()
    return "bias" not in lowered and "norm" not in lowered and "ln_" not in lowered
