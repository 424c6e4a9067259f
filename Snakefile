# matex pipeline. Run: snakemake --profile workflow/profiles/local   (see README)
import os

from snakemake.utils import min_version, validate

min_version("9.0")


# the default config, found next to this file even when --directory points elsewhere; overlays given
# with --configfile (config/mscxr.yaml, .test/config/config.yaml, yours) are merged onto it
configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "workflow/report/workflow.rst"


validate(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))

# Method names and every method's parameters (names, types) against the method registry's catalogue
# (matex/methods.yaml): a typo fails here, before any job starts, naming the config key.
from matex.config import validate_config

validate_config(config)

DS = f"{config['results_dir']}/{config['dataset']}"
MD = f"{DS}/{config['model']['name']}"


wildcard_constraints:
    method=r"[A-Za-z0-9_]+",
    shard=r"\d+",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/roar.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/provenance.smk"


rule all:
    default_target: True
    input:
        final_targets(),
        f"{MD}/tables/pipeline_runtime.md",
