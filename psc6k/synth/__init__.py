"""Synthetic photo-sketch pairs with exact dense ground truth (``psc6k synth``).

- :mod:`psc6k.synth.shapes` - procedural categories (part layouts) and object poses.
- :mod:`psc6k.synth.render` - textured photos on clutter; human-like sketch strokes.
- :mod:`psc6k.synth.warp` - the smooth invertible sketch -> photo deformation and its flows.
- :mod:`psc6k.synth.dataset` - a whole Sketchy-shaped benchmark (:func:`generate`).
- :mod:`psc6k.synth.preview` - contact sheet of pairs with keypoints.
"""

from psc6k.synth.dataset import category_names, generate, make_photo_record, simulate_clicks

__all__ = ["category_names", "generate", "make_photo_record", "simulate_clicks"]
