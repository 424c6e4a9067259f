"""Attribution maps of a whole dataset: which pairs a run explains, computing their maps in batches,
and the map files on disk (write, merge shards, read back one pair at a time). ``store`` holds them all.

This layer sits above ``models`` (it runs a model and reads its tokeniser) and below ``metrics``,
which reads the stored maps; attribution methods themselves never import it."""
