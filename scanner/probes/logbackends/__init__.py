"""Log backends: where a system's access log lands, behind one small interface (see `base.py`)."""
