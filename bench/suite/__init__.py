"""The benchmark suite behind `make bench` (bench/run.py): one module per part, each a plain function that
returns a JSON-ready dict. ``common`` holds the data sets, model recipes and the timing rule."""
