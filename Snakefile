# matex pipeline: the workflow is workflow/Snakefile (the Snakemake workflow catalog's layout); this file
# lets `snakemake` run from the repository root. Run: snakemake --profile workflow/profiles/local
# (`include:` would drop the included file's default target, rule all; this keeps it.)
workflow.include("workflow/Snakefile", overwrite_default_target=True)
