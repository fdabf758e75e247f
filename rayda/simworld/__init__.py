"""simworld: the built-in procedural sim-to-real street-scene benchmark."""
from rayda.simworld.generate import DOMAINS, generate
from rayda.simworld.render import NO_GAP, GapConfig, Scene, render

__all__ = ["DOMAINS", "NO_GAP", "GapConfig", "Scene", "generate", "render"]
