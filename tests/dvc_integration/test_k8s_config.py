"""The cluster path, checked without a cluster: deploy/k8s/ against dagster-k8s's own schemas and code.

The run config is validated by Dagster against `k8s_job_executor`'s schema, the executor is built from it
exactly as a run pod builds it, and its step handler submits the Job of the root recipe's train step to a
Kubernetes API stand-in on 127.0.0.1 (the real `kubernetes` client, over HTTP): the test reads what
arrived. Nothing here starts a pod; docs/cluster.md says what was not executed.
"""

import base64
import json
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.definitions.reconstruct import reconstructable
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.instance.config import dagster_instance_config
from dagster._core.test_utils import create_run_for_test, instance_for_test
from dagster._grpc.types import ExecuteStepArgs
from dagster._serdes import deserialize_value
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.job import get_user_defined_k8s_config

from dagster_project.dvc_integration.k8s import K8S_CONFIG_TAG, check_gpu_launch, k8s_executor, k8s_op_tags

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "k8s"
RUN_CONFIG = yaml.safe_load((DEPLOY / "run_config.yaml").read_text())
EXECUTION = RUN_CONFIG["execution"]["config"]
INSTANCE_YAML = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
MANIFESTS = [d for d in yaml.safe_load_all((DEPLOY / "cluster.yaml").read_text()) if d]

# The root recipe's train stage as dvc.yaml declares it. Its pod: the stage's own resources block when
# dvc.yaml has one, else this one (two GPUs: the torchrun path of docs/cluster.md).
TRAIN = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
EXAMPLE_RESOURCES = {
    "gpu": 2,
    "cpu": "8",
    "memory": "32Gi",
    "shm": "8Gi",
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}
TRAIN_META = {"resources": EXAMPLE_RESOURCES, **TRAIN["meta"]["dagster"]}
RESOURCES = TRAIN_META["resources"]
TRAIN_STEP = "default__train"
DEDUP_STEP = "default__dedup"  # a stage without resources: the executor's default pod

SECRET_VALUES = {  # set in the launching process: none may reach the submitted Job
    "OPENAI_API_KEY": "fake-key-that-must-not-reach-a-job-spec",
    "DISTILL_TEACHER_BASE_URL": "http://vllm-0.internal:8000/v1,http://vllm-1.internal:8000/v1",
}


@dg.op(name=TRAIN_STEP, tags=k8s_op_tags(TRAIN_META), description=TRAIN["cmd"])
def train_step() -> None:
    """Stands for the train stage's own step (the lead's assets.py runs `dvc repro` there)."""


@dg.op(name=DEDUP_STEP)
def dedup_step() -> None:
    """A step with no resources block."""


@dg.job(executor_def=k8s_job_executor)
def cluster_job() -> None:
    train_step()
    dedup_step()


class _KubernetesApi(BaseHTTPRequestHandler):
    """The one call a step launch makes: POST /apis/batch/v1/namespaces/<ns>/jobs, recorded and echoed."""

    received: list[tuple[str, str, dict[str, Any], dict[str, str]]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(("POST", self.path, body, dict(self.headers)))
        answer = json.dumps({**body, "status": {}}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[tuple[Path, list]]:
    """A Kubernetes API stand-in on 127.0.0.1 and a kubeconfig pointing at it."""
    _KubernetesApi.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KubernetesApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "t", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                "users": [{"name": "t", "user": {"token": "test-token"}}],
                "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t", "namespace": "distill"}}],
                "current-context": "t",
            }
        )
    )
    yield kubeconfig, _KubernetesApi.received
    server.shutdown()
    thread.join()


def _launcher_block(kubeconfig: Path) -> dict[str, Any]:
    """deploy/k8s/dagster.yaml's run launcher, reaching the stand-in instead of the in-cluster API."""
    block = json.loads(json.dumps(INSTANCE_YAML["run_launcher"]))
    block["config"].update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    return block


def _submit(step_key: str, kubeconfig: Path, received: list) -> dict[str, Any]:
    """Launch `step_key` of `cluster_job` as the run pod would, with the executor made from the run
    config; return the Job body that reached the API."""
    processed = process_config(k8s_job_executor.config_schema.config_type, EXECUTION)
    assert processed.success, processed.errors
    with instance_for_test(overrides={"run_launcher": _launcher_block(kubeconfig)}) as instance:
        assert isinstance(instance.run_launcher, K8sRunLauncher)
        job = reconstructable(cluster_job)
        origin = job.get_python_origin()
        # what the image's code server records: its `dagster` entry point
        origin = origin._replace(
            repository_origin=origin.repository_origin._replace(
                executable_path="/usr/local/bin/python", entry_point=["dagster"]
            )
        )
        executor = k8s_job_executor.executor_creation_fn(
            InitExecutorContext(
                job=job, executor_def=k8s_job_executor, executor_config=processed.value, instance=instance
            )
        )
        run = create_run_for_test(instance, job_name="cluster_job", job_code_origin=origin)
        plan = create_execution_plan(job)
        plan_context = PlanOrchestrationContext(
            plan_data=PlanData(
                job=job,
                dagster_run=run,
                instance=instance,
                execution_plan=plan,
                raise_on_error=True,
                retry_mode=RetryMode.DISABLED,
            ),
            log_manager=create_context_free_log_manager(instance, run),
            executor=executor,
            output_capture=None,
        )
        context = StepHandlerContext(
            instance=instance,
            plan_context=plan_context,
            steps=plan.steps,
            execute_step_args=ExecuteStepArgs(origin, run.run_id, [step_key]),
            dagster_run=run,
        )
        events = list(executor._step_handler.launch_step(context))  # noqa: SLF001 (the handler is the unit)
    assert events and events[0].event_type_value == "STEP_WORKER_STARTING"
    assert len(received) == 1, received
    method, path, body, headers = received[0]
    assert (method, path) == ("POST", f"/apis/batch/v1/namespaces/{EXECUTION['job_namespace']}/jobs")
    assert headers["Content-Type"] == "application/json"
    return body


def _dvc_config() -> dict[str, str]:
    """DVC's config as DVC itself reads it in a pod (DVC_SYSTEM_CONFIG_DIR from the run config)."""
    env_vars = dict(e.split("=", 1) for e in EXECUTION["env_vars"] if "=" in e)
    workspace_path = env_vars["DVC_SYSTEM_CONFIG_DIR"].replace(env_vars["DISTILL_PROJECT_DIR"], str(ROOT), 1)
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "config", "--list"],
        cwd=ROOT,
        env={**os.environ, "DVC_SYSTEM_CONFIG_DIR": workspace_path, "DVC_NO_ANALYTICS": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def test_run_config_validates_against_the_k8s_executor_schema() -> None:
    dg.validate_run_config(cluster_job, RUN_CONFIG)
    broken = json.loads(json.dumps(RUN_CONFIG))
    broken["execution"]["config"]["env_secret"] = ["distill-teacher"]  # a typo of env_secrets
    with pytest.raises(dg.DagsterInvalidConfigError, match="env_secret"):
        dg.validate_run_config(cluster_job, broken)


def test_executor_with_the_run_config_built_in(tmp_path: Path) -> None:
    """What `Definitions(executor=k8s_executor(...))` runs with equals what the run config gives."""
    executor = k8s_executor(DEPLOY / "run_config.yaml")

    @dg.job(executor_def=executor)
    def configured_job() -> None:
        train_step()

    resolved = dg.validate_run_config(configured_job, {})["execution"]["distill_k8s"]
    assert resolved == dg.validate_run_config(cluster_job, RUN_CONFIG)["execution"]["k8s"]
    broken = tmp_path / "run_config.yaml"
    broken.write_text(yaml.safe_dump({"execution": {"config": {**EXECUTION, "job_imag": "x"}}}))
    with pytest.raises(ValueError, match=r"run_config\.yaml: execution\.config does not fit .*job_imag"):
        k8s_executor(broken)
    broken.write_text(yaml.safe_dump({"ops": {}}))
    with pytest.raises(ValueError, match=r"no execution\.config mapping"):
        k8s_executor(broken)


def test_instance_yaml_validates_and_names_no_secret() -> None:
    config, custom_class = dagster_instance_config(str(DEPLOY))
    assert custom_class is None
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    launcher = process_config(
        resolve_to_config_type(K8sRunLauncher.config_type()), INSTANCE_YAML["run_launcher"]["config"]
    )
    assert launcher.success, launcher.errors
    pg = INSTANCE_YAML["storage"]["postgres"]["postgres_db"]
    assert {k: v for k, v in pg.items() if k != "port"} == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "username": {"env": "DAGSTER_PG_USERNAME"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
    }


def test_referenced_cluster_objects_exist_and_secrets_are_not_in_git() -> None:
    names = {(d["kind"], d["metadata"]["name"]) for d in MANIFESTS}
    launcher = INSTANCE_YAML["run_launcher"]["config"]
    for config in (EXECUTION, launcher):
        for volume in config["volumes"]:
            assert ("PersistentVolumeClaim", volume["persistent_volume_claim"]["claim_name"]) in names
        assert ("ServiceAccount", config["service_account_name"]) in names
        for config_map in config["env_config_maps"]:
            assert ("ConfigMap", config_map) in names
        assert config["job_namespace"] == "distill" and ("Namespace", "distill") in names
    assert not [d for d in MANIFESTS if d["kind"] == "Secret"], (
        "secrets are made with kubectl, not kept in git"
    )
    # the run pod and the step pods see the same volumes at the same paths
    assert launcher["volumes"] == EXECUTION["volumes"]
    assert launcher["volume_mounts"] == EXECUTION["volume_mounts"]
    for pvc in (d for d in MANIFESTS if d["kind"] == "PersistentVolumeClaim"):
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], pvc["metadata"]["name"]


def test_gpu_step_job_as_submitted(kube_api: tuple[Path, list], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRET_VALUES.items():
        monkeypatch.setenv(name, value)
    kubeconfig, received = kube_api
    body = _submit(TRAIN_STEP, kubeconfig, received)
    text = json.dumps(body)
    for value in SECRET_VALUES.values():
        assert value not in text

    assert body["kind"] == "Job" and body["metadata"]["labels"]["dagster/op"] == TRAIN_STEP
    pod = body["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == EXECUTION["job_image"]
    assert container["args"] == ["dagster", "api", "execute_step"]
    env = {e["name"]: e for e in container["env"]}
    step_args = deserialize_value(
        zlib.decompress(base64.b64decode(env["DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS"]["value"])).decode(),
        ExecuteStepArgs,
    )
    assert step_args.step_keys_to_execute == [TRAIN_STEP]
    assert env["DAGSTER_RUN_STEP_KEY"]["value"] == TRAIN_STEP
    assert container["workingDir"] == "/workspace"
    assert env["DISTILL_PROJECT_DIR"]["value"] == "/workspace"
    assert pod["serviceAccountName"] == "distill-dagster"
    assert pod["securityContext"]["fsGroup"] == 1000

    # the GPUs: requested and limited alike; cpu and memory from the stage's block
    gpus = str(RESOURCES["gpu"])
    assert container["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert container["resources"]["requests"]["cpu"] == str(RESOURCES["cpu"])
    assert container["resources"]["requests"]["memory"] == RESOURCES["memory"]
    assert container["resources"]["limits"]["memory"] == RESOURCES["memory"]
    if "tolerations" in RESOURCES:
        assert pod["tolerations"] == [{"operator": "Equal", **t} for t in RESOURCES["tolerations"]]

    # volumes: each once; the workspace and the DVC cache where DVC looks for them
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert len(volumes) == len(pod["volumes"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert len(mounts) == len(container["volumeMounts"])
    assert volumes[mounts["/workspace"]]["persistentVolumeClaim"]["claimName"] == "distill-workspace"
    dvc_config = _dvc_config()
    assert (dvc_config["cache.shared"], dvc_config["core.hardlink_lock"]) == ("group", "true")
    cache_dir = dvc_config["cache.dir"]
    assert cache_dir == "/mnt/dvc-cache"
    assert volumes[mounts[cache_dir]]["persistentVolumeClaim"]["claimName"] == "distill-dvc-cache"
    if "shm" in RESOURCES:
        assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": RESOURCES["shm"]}

    # the teacher's endpoint and key: the whole Secret as env, by reference; postgres password likewise
    assert {"secretRef": {"name": "distill-teacher"}} in container["envFrom"]
    assert {"configMapRef": {"name": "distill-dagster-pg"}} in container["envFrom"]
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "distill-dagster-postgresql",
        "key": "postgresql-password",
    }
    assert "OPENAI_API_KEY" not in env and "DISTILL_TEACHER_BASE_URL" not in env


def test_step_without_resources_gets_the_default_pod(kube_api: tuple[Path, list]) -> None:
    kubeconfig, received = kube_api
    body = _submit(DEDUP_STEP, kubeconfig, received)
    pod = body["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"] == EXECUTION["resources"]
    assert "tolerations" not in pod and "nodeSelector" not in pod
    assert sorted(m["mountPath"] for m in container["volumeMounts"]) == ["/mnt/dvc-cache", "/workspace"]


def test_op_tags_read_back_by_dagster_k8s() -> None:
    meta = {
        "resources": {
            "gpu": 4,
            "cpu": 16,
            "memory": "64Gi",
            "shm": "16Gi",
            "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}],
        }
    }
    tags = k8s_op_tags(meta)
    assert list(tags) == [K8S_CONFIG_TAG]
    config = get_user_defined_k8s_config(tags)  # dagster-k8s's own reading and validation of the tag
    assert config.container_config["resources"] == {
        "requests": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"},
        "limits": {"memory": "64Gi", "nvidia.com/gpu": "4"},
    }
    assert config.pod_spec_config["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert config.pod_spec_config["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}
    ]
    assert k8s_op_tags({}) == {} and k8s_op_tags({"group": "model"}) == {}
    cpu_only = json.loads(k8s_op_tags({"resources": {"gpu": 0, "cpu": "500m"}})[K8S_CONFIG_TAG])
    assert cpu_only == {"container_config": {"resources": {"requests": {"cpu": "500m"}}}}


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (
            {"gpus": 1},
            r"meta\.dagster\.resources\.gpus: unknown key \(did you mean 'gpu'\?\); allowed keys: gpu",
        ),
        ({"memroy": "1Gi"}, r"resources\.memroy: unknown key \(did you mean 'memory'\?\)"),
        ({"nodeSelector": {}}, r"resources\.nodeSelector: unknown key \(did you mean 'node_selector'\?\)"),
        ({"gpu": 0.5}, r"resources\.gpu: 0\.5 is not valid; allowed: a whole number of GPUs"),
        ({"gpu": "1"}, r"resources\.gpu: '1' is not valid"),
        (
            {"memory": "16GB"},
            r"resources\.memory: '16GB' is not valid; allowed: a memory quantity, e\.g\. 16Gi",
        ),
        ({"cpu": "four"}, r"resources\.cpu: 'four' is not valid; allowed: a CPU quantity"),
        ({"cpu": 0}, r"resources\.cpu: 0 is not valid"),
        ({"shm": True}, r"resources\.shm: True is not valid"),
        ({"node_selector": ["gpu"]}, r"resources\.node_selector: \['gpu'\] is not valid; allowed: a mapping"),
        (
            {"tolerations": [{"key": "a", "effect": "NoRun"}]},
            r"tolerations\[0\]\.effect: 'NoRun' .*NoSchedule",
        ),
        (
            {"tolerations": [{"key": "a", "operator": "In"}]},
            r"tolerations\[0\]\.operator: 'In' .*Exists or Equal",
        ),
        (
            {"tolerations": [{"key": "a", "colour": 1}]},
            r"tolerations\[0\]\.colour: 1 .*the keys key, operator",
        ),
    ],
)
def test_op_tags_errors_name_the_key(resources: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        k8s_op_tags({"resources": resources})


def test_resources_must_be_a_mapping() -> None:
    with pytest.raises(
        ValueError, match=r"meta\.dagster\.resources: 'gpu' is not a mapping; allowed keys: gpu"
    ):
        k8s_op_tags({"resources": "gpu"})


def test_torchrun_processes_match_the_pods_gpus() -> None:
    cmd = "torchrun --nproc-per-node 4 -m dagster_project.stages.train --params params.yaml"
    check_gpu_launch(cmd, {"resources": {"gpu": 4}})
    check_gpu_launch(cmd.replace("4", "gpu", 1), {"resources": {"gpu": 2}})
    check_gpu_launch(TRAIN["cmd"], TRAIN_META)  # plain `python -m`: one process, nothing to compare
    with pytest.raises(ValueError, match=r"resources\.gpu: 2 GPUs for a command that starts 4 processes"):
        check_gpu_launch(cmd, {"resources": {"gpu": 2}})
    with pytest.raises(ValueError, match="starts 3 processes"):
        check_gpu_launch("accelerate launch --multi_gpu --num_processes=3 -m x", {"resources": {"gpu": 1}})


def test_the_documented_train_stage_is_valid() -> None:
    """docs/cluster.md's 4-GPU train stage: its resources make a tag, its torchrun matches its GPUs."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    block = next(b for b in text.split("```yaml\n")[1:] if b.startswith("train:"))
    stage = yaml.safe_load(block.split("```")[0])["train"]
    meta = stage["meta"]["dagster"]
    config = get_user_defined_k8s_config(k8s_op_tags(meta))
    assert config.container_config["resources"]["limits"]["nvidia.com/gpu"] == "4"
    check_gpu_launch(stage["cmd"], meta)
    with pytest.raises(ValueError, match="starts 4 processes"):
        check_gpu_launch(stage["cmd"], {"resources": {**meta["resources"], "gpu": 8}})
