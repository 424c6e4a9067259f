"""Generators of the pages and the catalogue that are written from the code, each with a ``--check``
mode or a test that fails when its output is out of date:

    python -m matex.docgen.methods_catalog     matex/methods.yaml (the method catalogue, from the registry)
    python -m matex.docgen.config_doc          config/README.md (every config key)
    python -m matex.docgen.report_docs api     docs/api.md; ``results RUN ...``: docs/results.md

They sit on top of the package (the catalogue generator imports the registry, and torch); nothing in
the package imports them."""
