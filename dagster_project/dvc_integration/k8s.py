"""A stage's `meta.dagster.resources` block -> the `dagster-k8s/config` op tag of its step's pod.

On a cluster (deploy/k8s/, docs/cluster.md) every step runs in a pod of its own (`k8s_job_executor`).
A stage that needs more than the executor's default pod says so in its dvc.yaml, next to the other
Dagster-only facts (DVC ignores `meta`, so changing it reruns nothing):

```yaml
train:
  meta:
    dagster:
      resources:
        gpu: 4            # nvidia.com/gpu, requested and limited (Kubernetes never shares a GPU)
        cpu: "16"         # CPU request: "500m", "4", 4 or 0.5 (no limit: a CPU limit only throttles)
        memory: 64Gi      # memory request and limit: binary suffixes Ki Mi Gi Ti (or k M G T)
        shm: 16Gi         # /dev/shm as a RAM disk of this size (multi-GPU: NCCL and DataLoader workers
                          # need more than a container's default 64 MiB)
        node_selector: {cloud.google.com/gke-accelerator: nvidia-h100-80gb}
        tolerations:      # for GPU nodes tainted e.g. nvidia.com/gpu=present:NoSchedule
          - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
```

`k8s_op_tags` is a pure function of that dict: it validates every key and value (a ValueError names
the key, what is allowed and an example) and returns the op tag dagster-k8s reads for the step's pod
(`container_config.resources`, `pod_spec_config.node_selector` / `tolerations` / `volumes`); the
executor's run config (deploy/k8s/run_config.yaml) gives every other step its defaults.
`check_gpu_launch` checks that a stage's `torchrun`/`accelerate` process count equals its GPUs, and
`k8s_executor` is the `k8s_job_executor` with that run config built in (for the cluster's Definitions).
"""

import difflib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagster import ExecutorDefinition

K8S_CONFIG_TAG = "dagster-k8s/config"  # the op tag dagster-k8s's k8s_job_executor reads per step
GPU_RESOURCE = "nvidia.com/gpu"
SHM_VOLUME = "dshm"

RESOURCE_KEYS: dict[str, str] = {
    "gpu": "a whole number of GPUs, e.g. 1 (requested and limited as nvidia.com/gpu)",
    "cpu": 'a CPU quantity, e.g. "4", "500m" or 2',
    "memory": "a memory quantity, e.g. 16Gi or 512Mi",
    "shm": "the size of /dev/shm (a RAM disk), e.g. 8Gi",
    "node_selector": "a mapping of node label -> value, e.g. {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}",
    "tolerations": "a list of {key, operator, value, effect}, e.g. "
    "[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
}
TOLERATION_KEYS = ("key", "operator", "value", "effect", "toleration_seconds")
TOLERATION_OPERATORS = ("Exists", "Equal")
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

_CPU = re.compile(r"^(\d+(\.\d+)?|\.\d+)m?$")
_MEMORY = re.compile(r"^(\d+(\.\d+)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
_LABEL = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _fail(key: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"meta.dagster.resources.{key}: {value!r} is not valid; allowed: {allowed}")


def _gpu(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail("gpu", value, RESOURCE_KEYS["gpu"] + " (0 or more; fractions of a GPU do not exist)")
    return value


def _quantity(key: str, value: Any, pattern: re.Pattern[str], hint: str) -> str:
    text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not pattern.match(text) or float(re.sub(r"[A-Za-z]+$", "", text)) <= 0:
        raise _fail(key, value, hint)
    return text


def _node_selector(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value:
        raise _fail("node_selector", value, RESOURCE_KEYS["node_selector"])
    selector: dict[str, str] = {}
    for label, label_value in value.items():
        if not isinstance(label, str) or not _LABEL.match(label):
            raise _fail(f"node_selector.{label}", label, "a node label name, e.g. nvidia.com/gpu.product")
        if not isinstance(label_value, str | int | float) or isinstance(label_value, bool):
            raise _fail(f"node_selector.{label}", label_value, "a label value (text)")
        selector[label] = str(label_value)
    return selector


def _tolerations(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _fail("tolerations", value, RESOURCE_KEYS["tolerations"])
    result = []
    for i, entry in enumerate(value):
        where = f"tolerations[{i}]"
        if not isinstance(entry, Mapping):
            raise _fail(where, entry, "a mapping with keys " + ", ".join(TOLERATION_KEYS))
        unknown = sorted(set(entry) - set(TOLERATION_KEYS))
        if unknown:
            raise _fail(f"{where}.{unknown[0]}", entry[unknown[0]], "the keys " + ", ".join(TOLERATION_KEYS))
        operator = entry.get("operator", "Equal")
        if operator not in TOLERATION_OPERATORS:
            raise _fail(f"{where}.operator", operator, " or ".join(TOLERATION_OPERATORS))
        effect = entry.get("effect")
        if effect is not None and effect not in TOLERATION_EFFECTS:
            raise _fail(f"{where}.effect", effect, ", ".join(TOLERATION_EFFECTS) + " (or leave it out: all)")
        if operator == "Exists" and entry.get("value") not in (None, ""):
            raise _fail(f"{where}.value", entry["value"], "no value with operator Exists (or use Equal)")
        if operator == "Equal" and not entry.get("key"):
            raise _fail(f"{where}.key", entry.get("key"), "a taint key (operator Equal needs one)")
        seconds = entry.get("toleration_seconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int)):
            raise _fail(f"{where}.toleration_seconds", seconds, "whole seconds, only with effect NoExecute")
        result.append({**{k: entry[k] for k in TOLERATION_KEYS if k in entry}, "operator": operator})
    return result


def k8s_op_tags(dagster_meta: Mapping[str, Any]) -> dict[str, str]:
    """The op tags that give a stage's step pod its `meta.dagster.resources` (`{}` when it has none).

    Returns `{"dagster-k8s/config": <JSON>}`: `container_config.resources` with requests (cpu, memory,
    nvidia.com/gpu) and limits (memory, nvidia.com/gpu: Kubernetes requires a GPU's request and limit
    to be equal), plus `pod_spec_config` for `node_selector`, `tolerations` and the `/dev/shm` volume.
    Raises ValueError naming the key, the allowed values and an example.
    """
    block = dagster_meta.get("resources")
    if block is None:
        return {}
    if not isinstance(block, Mapping):
        raise ValueError(
            f"meta.dagster.resources: {block!r} is not a mapping; allowed keys: {', '.join(RESOURCE_KEYS)} "
            '(e.g. resources: {gpu: 1, cpu: "4", memory: 16Gi})'
        )
    unknown = sorted(set(block) - set(RESOURCE_KEYS))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key).lower(), RESOURCE_KEYS, n=1, cutoff=0.6) or [
            k for k in RESOURCE_KEYS if k.startswith(str(key)[:3].lower())
        ]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"meta.dagster.resources.{key}: unknown key{hint}; allowed keys: "
            + "; ".join(f"{k}: {v}" for k, v in RESOURCE_KEYS.items())
        )

    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    container: dict[str, Any] = {}
    pod: dict[str, Any] = {}
    if "cpu" in block:
        requests["cpu"] = _quantity("cpu", block["cpu"], _CPU, RESOURCE_KEYS["cpu"])
    if "memory" in block:
        memory = _quantity("memory", block["memory"], _MEMORY, RESOURCE_KEYS["memory"] + " (not 16GB)")
        requests["memory"] = limits["memory"] = memory
    if "gpu" in block and _gpu(block["gpu"]) > 0:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(block["gpu"])
    if requests or limits:
        container["resources"] = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
    if "shm" in block:
        size = _quantity("shm", block["shm"], _MEMORY, RESOURCE_KEYS["shm"])
        container["volume_mounts"] = [{"name": SHM_VOLUME, "mount_path": "/dev/shm"}]
        pod["volumes"] = [{"name": SHM_VOLUME, "empty_dir": {"medium": "Memory", "size_limit": size}}]
    if "node_selector" in block:
        pod["node_selector"] = _node_selector(block["node_selector"])
    if "tolerations" in block:
        pod["tolerations"] = _tolerations(block["tolerations"])

    config = {k: v for k, v in (("container_config", container), ("pod_spec_config", pod)) if v}
    return {K8S_CONFIG_TAG: json.dumps(config, sort_keys=True)} if config else {}


_NPROC = re.compile(r"(?:--nproc[-_]per[-_]node|--num[-_]processes)(?:=|\s+)(\S+)")


def check_gpu_launch(cmd: str, dagster_meta: Mapping[str, Any]) -> None:
    """Raise ValueError when a stage's launcher starts another number of processes than its pod's GPUs.

    N GPUs train from the same stage kind with `torchrun --nproc-per-node N -m dagster_project.stages.train
    ...` (or `accelerate launch --num_processes N ...`); the pod gets `meta.dagster.resources.gpu` GPUs.
    The two must agree (`--nproc-per-node gpu` or `auto` takes whatever the pod has, and always agrees).
    """
    match = _NPROC.search(cmd)
    resources = dagster_meta.get("resources")
    gpus = resources.get("gpu") if isinstance(resources, Mapping) else None
    if match is None or gpus is None or not match.group(1).isdigit():
        return
    if int(match.group(1)) != _gpu(gpus):
        raise ValueError(
            f"meta.dagster.resources.gpu: {gpus} GPUs for a command that starts {match.group(1)} processes "
            f"({match.group(0)!r}); make them equal, or use --nproc-per-node gpu"
        )


def k8s_executor(run_config_path: Path | str) -> "ExecutorDefinition":
    """dagster-k8s's `k8s_job_executor` with a run config file's `execution.config` built in.

    For `Definitions(executor=...)` on the cluster (deploy/k8s/run_config.yaml), so that the UI's
    Materialize, sensors and schedules submit steps as configured without pasting run config. The config
    is checked against the executor's own schema here, at definition time (ValueError naming the file and
    dagster-k8s's message), not first when a run starts. Needs the `scale` extra (dagster-k8s).
    """
    import yaml
    from dagster._config import process_config
    from dagster_k8s import k8s_job_executor

    path = Path(run_config_path)
    config = ((yaml.safe_load(path.read_text()) or {}).get("execution") or {}).get("config")
    if not isinstance(config, Mapping):
        raise ValueError(f"{path}: no execution.config mapping (the k8s_job_executor's config) in it")
    result = process_config(k8s_job_executor.config_schema.config_type, dict(config))
    if not result.success:
        problems = "; ".join(error.message for error in result.errors or [])
        raise ValueError(f"{path}: execution.config does not fit dagster-k8s's k8s_job_executor: {problems}")
    return k8s_job_executor.configured(dict(config), name="distill_k8s")
