"""What people look at: plots, widget explorers, the HTML rendering, the headline and the
papermill pipeline that runs the notebooks (``notebooks``: which notebooks and parameters;
``execution``: one notebook; ``scheduling``: runs, sweeps, seeds; ``index_page``: the scorecard
and index; ``cli``: ``python -m geofusion.pipeline``).

Layer 7 (top): may import every layer.
"""
