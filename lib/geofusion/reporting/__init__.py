"""What people look at: plots, widget explorers, the HTML rendering, the headline and the
papermill pipeline that runs the notebooks.

Layer 7 (top): may import every layer.
"""
