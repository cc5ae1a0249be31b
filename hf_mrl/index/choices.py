"""The choices an index takes, apart from the code that uses them (which imports faiss and torch): the CLI lists
them in `--help` without loading either."""

SHORTLIST_INDEXES = ("flat", "hnsw", "ivf")
STORAGES = ("float32", "float16", "bfloat16", "int8", "binary")
INT8_SCALES = ("dimension", "vector")
