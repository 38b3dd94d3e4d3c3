"""Offline checks of the Kubernetes manifests in k8s/.

No cluster here, so:
- every YAML file is parsed and linted (yamllint, with the repository's .yamllint);
- the base and the cpu overlay are rendered by real kustomize (`kubectl kustomize`);
- built-in objects (ConfigMap, PVC, Pod, and the MPIJob's pod templates as PodTemplates) are
  validated against the real Kubernetes schemas by kubernetes_validate, strictly (unknown
  fields are errors); the MPIJob against the mpi-operator CRD in ../shared/k8s/, made strict
  the way `kubectl --validate=strict` treats it;
- then the settings the job needs to run, and to resume after a restart, are checked.
Each validator is also shown to reject broken copies.
"""
import copy
import functools
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from distjob.machine import compute_threads
from conftest import kustomize

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
CRD_FILE = ROOT.parent / "shared" / "k8s" / "kubeflow.org_mpijobs.yaml"
K8S_VERSION = "1.30"  # Kubernetes API the built-in objects are validated against

PVC_MOUNT = "/mnt/distjob"
HOSTFILE = "/etc/mpi/hostfile"  # where mpi-operator v2 mounts the hostfile on the launcher
IMAGE = "registry.example.com/distjob"
# The only distjob config keys the ConfigMap may set.
ALLOWED_CONFIG_KEYS = {"epochs", "batch_size", "lr", "pooling", "embedding", "embedding_root",
                       "data_dir", "output_dir", "max_tokens", "seed", "ctx", "checkpoint_every_minutes",
                       "cache_dir"}


def load_all(path):
    return [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc is not None]


# --- helpers ------------------------------------------------------------------------------------

def one(objects, kind):
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def replicas(mpijob):
    return mpijob["spec"]["mpiReplicaSpecs"]


def main_container(replica):
    return replica["template"]["spec"]["containers"][0]  # the one mpi-operator sets up


def images(mpijob):
    return {c["image"] for replica in replicas(mpijob).values() for c in replica["template"]["spec"]["containers"]}


def launcher_args(mpijob):
    container = main_container(replicas(mpijob)["Launcher"])
    return container.get("command", []) + container.get("args", [])


def flag_value(args, flag):
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def cpu_quantity(value):
    value = str(value)
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def env_value(container, name):
    return {e["name"]: e.get("value") for e in container.get("env", [])}.get(name)


def distjob_config(objects):
    (key, text), = one(objects, "ConfigMap")["data"].items()
    return key, yaml.safe_load(text)


def yaml_files():
    return sorted(K8S.rglob("*.yaml")) + [ROOT / ".yamllint", ROOT / ".hadolint.yaml"]


KUSTOMIZATIONS = {"base": K8S / "base", "cpu": K8S / "overlays" / "cpu"}


@functools.cache
def _render(name):
    return kustomize(KUSTOMIZATIONS[name])


def build(name):
    """A fresh copy of a rendered kustomization; rendering errors fail the test that asks."""
    return copy.deepcopy(_render(name))


@pytest.fixture(params=list(KUSTOMIZATIONS))
def kustomization(request):
    return request.param


@pytest.fixture(scope="module")
def kubernetes_validate():
    return pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")


@pytest.fixture(scope="module")
def crd_validator():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    if not CRD_FILE.exists():
        pytest.skip(f"MPIJob CRD not present at {CRD_FILE}")
    crd = yaml.safe_load(CRD_FILE.read_text())
    version, = [v for v in crd["spec"]["versions"] if v["name"] == "v2beta1"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def strict(schema):
    """Like `kubectl --validate=strict`: a field the schema does not list is an error, wherever
    the schema lists properties and does not say unknown fields are kept."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict(schema["additionalProperties"])
    if "items" in schema:
        schema["items"] = strict(schema["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            schema[key] = [strict(sub) for sub in schema[key]]
    return schema


def validate_builtin(kubernetes_validate, obj):
    """Validate against the real schema; a kind without one is a failure, not a pass."""
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as e:
        pytest.fail(e.message)


def as_pod_template(mpijob, role):
    """The MPIJob's pod template for a role, as a core/v1 PodTemplate kubernetes_validate knows."""
    template = replicas(mpijob)[role]["template"]
    metadata = {"name": f"{mpijob['metadata']['name']}-{role.lower()}", **template.get("metadata", {})}
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": metadata, "template": template}


# --- files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses_and_passes_yamllint(path):
    text = path.read_text()
    assert load_all(path), f"{path} holds no YAML document"
    linter = pytest.importorskip("yamllint.linter", reason="yamllint is not installed")
    from yamllint.config import YamlLintConfig
    problems = list(linter.run(text, YamlLintConfig(file=str(ROOT / ".yamllint")), str(path)))
    assert not problems, "\n".join(f"{path}:{p.line}:{p.column} {p.desc} ({p.rule})" for p in problems)


def test_yamllint_reports_a_broken_file():
    linter = pytest.importorskip("yamllint.linter", reason="yamllint is not installed")
    from yamllint.config import YamlLintConfig
    broken = (K8S / "base" / "pvc.yaml").read_text() + "kind: Duplicate   \n"  # duplicate key, trailing spaces
    rules = {p.rule for p in linter.run(broken, YamlLintConfig(file=str(ROOT / ".yamllint")))}
    assert {"key-duplicates", "trailing-spaces"} <= rules


def test_hostfile_example_is_in_the_format_horovodrun_reads():
    # horovodrun --hostfile takes each line's first word as the host and what follows '=' as its
    # slots: comments or blank lines would break it, so the example has none.
    lines = (ROOT / "launch" / "hostfile.example").read_text().splitlines()
    assert lines and all(re.fullmatch(r"[\w.-]+ slots=[0-9]+", line) for line in lines), lines
    try:
        from horovod.runner.common.util.hosts import parse_host_files
    except ImportError:
        return
    assert parse_host_files(str(ROOT / "launch" / "hostfile.example")) == ",".join(
        line.replace(" slots=", ":") for line in lines)


# --- rendering ----------------------------------------------------------------------------------

def test_base_and_overlay_render_the_same_objects():
    base = build("base")
    cpu = build("cpu")
    kinds = sorted((obj["kind"], obj["metadata"]["name"]) for obj in base)
    assert kinds == [("ConfigMap", "distjob-config"), ("MPIJob", "distjob"),
                     ("PersistentVolumeClaim", "distjob-storage")]
    assert sorted((obj["kind"], obj["metadata"]["name"]) for obj in cpu) == kinds


def broken_overlay(tmp_path, old, new):
    """A copy of k8s/ whose cpu overlay patch has `old` replaced by `new`."""
    shutil.copytree(K8S, tmp_path / "k8s")
    patch = tmp_path / "k8s" / "overlays" / "cpu" / "mpijob-cpu.yaml"
    assert old in patch.read_text()
    patch.write_text(patch.read_text().replace(old, new, 1))
    return patch.parent


def test_kustomize_refuses_an_overlay_whose_patch_test_fails(tmp_path):
    overlay = broken_overlay(tmp_path, "value: OMP_NUM_THREADS", "value: OMP_THREAD_LIMIT")
    with pytest.raises(subprocess.CalledProcessError) as error:
        kustomize(overlay)
    assert "test failed" in error.value.stderr


def test_a_patch_path_kustomize_adds_is_caught_by_the_crd(tmp_path, crd_validator):
    # kustomize's JSON patch `replace` on a path that is not there adds it instead of failing:
    # the strict CRD validation is what catches a mistyped path.
    mpijob = one(kustomize(broken_overlay(tmp_path, "path: /spec/slotsPerWorker\n",
                                          "path: /spec/slotsPerWorkers\n")), "MPIJob")
    assert mpijob["spec"]["slotsPerWorkers"] == 1
    assert not crd_validator.is_valid(mpijob)


# --- schemas ------------------------------------------------------------------------------------

def test_builtin_objects_match_the_kubernetes_schema(kubernetes_validate, kustomization):
    rendered = build(kustomization)
    for obj in rendered:
        if obj["kind"] != "MPIJob":
            validate_builtin(kubernetes_validate, obj)
    mpijob = one(rendered, "MPIJob")
    for role in replicas(mpijob):
        validate_builtin(kubernetes_validate, as_pod_template(mpijob, role))
    # The MPIJob's own metadata is an ObjectMeta too: check it on an object that has one.
    validate_builtin(kubernetes_validate, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": mpijob["metadata"]})


def test_tools_pod_matches_the_kubernetes_schema(kubernetes_validate):
    pod = one(load_all(K8S / "tools" / "pvc-shell.yaml"), "Pod")
    validate_builtin(kubernetes_validate, pod)


def test_mpijob_matches_the_mpi_operator_crd(crd_validator, kustomization):
    rendered = build(kustomization)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in crd_validator.iter_errors(one(rendered, "MPIJob"))]
    assert not errors, "\n".join(errors)


def _remove(path):
    def mutate(obj):
        *parents, last = path
        for part in parents:
            obj = obj[part]
        del obj[last]
    return mutate


def _set(path, value):
    def mutate(obj):
        *parents, last = path
        for part in parents:
            obj = obj[part]
        obj[last] = value
    return mutate


WORKER_POD = ["spec", "mpiReplicaSpecs", "Worker", "template", "spec"]


@pytest.mark.parametrize("mutate", [
    _remove(["spec", "mpiReplicaSpecs"]),                              # required field
    _remove(WORKER_POD + ["containers"]),                              # required field, nested
    _set(["spec", "slotsPerWorkers"], 4),                              # unknown field
    _set(WORKER_POD + ["containers", 0, "imagePullPolcy"], "Always"),  # unknown field, nested
    _set(["spec", "slotsPerWorker"], "four"),                          # wrong type
    _set(["spec", "mpiReplicaSpecs", "Worker", "replicas"], "2"),      # wrong type, nested
    _set(["spec", "mpiImplementation"], "OpenMP"),                     # not in the enum
], ids=["no-mpiReplicaSpecs", "no-worker-containers", "unknown-spec-field", "unknown-container-field",
        "slotsPerWorker-string", "replicas-string", "bad-enum"])
def test_crd_validation_rejects_a_broken_mpijob(crd_validator, mutate):
    mpijob = one(build("base"), "MPIJob")
    mutate(mpijob)
    assert not crd_validator.is_valid(mpijob)


@pytest.mark.parametrize("kind, mutate", [
    ("PodTemplate", _remove(["template", "spec", "containers"])),          # required field
    ("PodTemplate", _set(["template", "spec", "containers", 0, "volumeMount"], [])),  # unknown field
    ("ConfigMap", _set(["datta"], {})),                                    # unknown field
    ("PersistentVolumeClaim", _set(["spec", "accessModes"], "ReadWriteMany")),  # wrong type
    ("PodTemplate", _set(["template", "spec", "securityContext", "runAsUser"], "1000")),  # wrong type
], ids=["no-containers", "unknown-container-field", "unknown-configmap-field", "accessModes-string",
        "runAsUser-string"])
def test_kubernetes_schema_rejects_a_broken_object(kubernetes_validate, kind, mutate):
    base = build("base")
    broken = as_pod_template(one(base, "MPIJob"), "Worker") if kind == "PodTemplate" else one(base, kind)
    mutate(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


# --- what the job needs -------------------------------------------------------------------------

def test_config_map_holds_a_distjob_config_with_known_keys(tmp_path):
    base = build("base")
    key, config = distjob_config(base)
    assert isinstance(config, dict) and config
    assert set(config) <= ALLOWED_CONFIG_KEYS, f"unexpected keys: {sorted(set(config) - ALLOWED_CONFIG_KEYS)}"
    try:
        from distjob.config import parse_config
    except ImportError:
        return
    (tmp_path / key).write_text(one(base, "ConfigMap")["data"][key])
    parse_config(["--config", str(tmp_path / key)])  # as the ranks read it: known keys, types, choices


def test_ranks_read_the_config_map_where_they_run(kustomization):
    rendered = build(kustomization)
    mpijob, config_map = one(rendered, "MPIJob"), one(rendered, "ConfigMap")
    config_path = flag_value(launcher_args(mpijob), "--config")
    (key,) = config_map["data"]
    for role, replica in replicas(mpijob).items():  # the ranks run on the workers
        pod = replica["template"]["spec"]
        volume, = [v["name"] for v in pod["volumes"]
                   if v.get("configMap", {}).get("name") == config_map["metadata"]["name"]]
        mount, = [m["mountPath"] for m in main_container(replica)["volumeMounts"] if m["name"] == volume]
        assert config_path == f"{mount}/{key}", role


def test_storage_is_one_pvc_at_the_same_path_on_launcher_and_workers(kustomization):
    rendered = build(kustomization)
    mpijob, pvc = one(rendered, "MPIJob"), one(rendered, "PersistentVolumeClaim")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]  # mounted by pods on several nodes at once
    for role, replica in replicas(mpijob).items():
        pod = replica["template"]["spec"]
        volume, = [v["name"] for v in pod["volumes"]
                   if v.get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"]]
        mounts = [m["mountPath"] for m in main_container(replica)["volumeMounts"] if m["name"] == volume]
        assert mounts == [PVC_MOUNT], role
    _, config = distjob_config(rendered)
    for key in ("data_dir", "output_dir", "embedding_root"):
        assert config[key].startswith(PVC_MOUNT + "/"), key


def test_pods_run_as_the_images_non_root_user(kustomization):
    rendered = build(kustomization)
    dockerfile = (ROOT / "Dockerfile.gpu").read_text()
    mpijob = one(rendered, "MPIJob")
    pods = [replica["template"]["spec"] for replica in replicas(mpijob).values()]
    pods.append(one(load_all(K8S / "tools" / "pvc-shell.yaml"), "Pod")["spec"])
    for pod in pods:
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] not in (0, None)
        assert re.search(rf"^USER {context['runAsUser']}(:|$)", dockerfile, re.M), "pod and image users differ"
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The worker's non-root sshd: the config and SSH keys live in that user's home, its port is probed.
    home = mpijob["spec"]["sshAuthMountPath"].removesuffix("/.ssh")
    worker = main_container(replicas(mpijob)["Worker"])
    sshd_config = flag_value(worker["args"], "-f")
    assert sshd_config.startswith(home + "/")
    owner = f"{context['runAsUser']}:{context['runAsGroup']}"
    assert f"COPY --chown={owner} launch/sshd_config {sshd_config}\n" in dockerfile
    lines = (ROOT / "launch" / "sshd_config").read_text().splitlines()
    assert f"Port {worker['readinessProbe']['tcpSocket']['port']}" in lines
    assert f"HostKey {mpijob['spec']['sshAuthMountPath']}/id_rsa" in lines


def test_np_is_workers_times_slots(kustomization):
    mpijob = one(build(kustomization), "MPIJob")
    args = launcher_args(mpijob)
    assert args[0] == "horovodrun"
    assert flag_value(args, "--hostfile") == HOSTFILE
    assert mpijob["spec"]["mpiImplementation"] == "OpenMPI"  # "host slots=N" lines, as horovodrun parses
    workers = replicas(mpijob)["Worker"]["replicas"]
    assert int(flag_value(args, "-np")) == workers * mpijob["spec"]["slotsPerWorker"]


def test_rank_threads_leave_a_cpu_for_the_python_thread(kustomization):
    mpijob = one(build(kustomization), "MPIJob")
    threads = int(env_value(main_container(replicas(mpijob)["Launcher"]), "OMP_NUM_THREADS"))
    worker_cpus = cpu_quantity(main_container(replicas(mpijob)["Worker"])["resources"]["requests"]["cpu"])
    # A rank computes on all its CPUs but one, which runs its python thread (compute_threads).
    assert threads == compute_threads(int(worker_cpus) // mpijob["spec"]["slotsPerWorker"])


def test_base_runs_one_rank_per_gpu():
    base = build("base")
    mpijob = one(base, "MPIJob")
    worker, launcher = main_container(replicas(mpijob)["Worker"]), main_container(replicas(mpijob)["Launcher"])
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) == mpijob["spec"]["slotsPerWorker"]
    assert "nvidia.com/gpu" not in str(launcher["resources"])  # the launcher only runs horovodrun
    assert distjob_config(base)[1]["ctx"] == "gpu" and "--ctx" not in launcher_args(mpijob)
    assert images(mpijob) == {f"{IMAGE}:gpu"}


def test_cpu_overlay_asks_for_no_gpu():
    mpijob = one(build("cpu"), "MPIJob")
    assert "nvidia.com/gpu" not in str(mpijob)
    assert flag_value(launcher_args(mpijob), "--ctx") == "cpu"
    assert images(mpijob) == {f"{IMAGE}:cpu"}


def test_a_failed_run_is_retried_and_resumes(kustomization):
    rendered = build(kustomization)
    mpijob = one(rendered, "MPIJob")
    run_policy = mpijob["spec"]["runPolicy"]
    assert run_policy["backoffLimit"] >= 1  # the launcher Job runs horovodrun again
    assert run_policy["cleanPodPolicy"] in ("Running", "All")
    assert replicas(mpijob)["Launcher"]["restartPolicy"] in ("Never", "OnFailure")
    assert replicas(mpijob)["Worker"]["restartPolicy"] in ("OnFailure", "Always")
    # A retry resumes because checkpoints outlive the pods (on the PVC) and resuming is left on.
    _, config = distjob_config(rendered)
    assert config["output_dir"].startswith(PVC_MOUNT + "/") and "resume" not in config
    assert "--resume" not in launcher_args(mpijob)


# --- Kubeflow Trainer v2: TrainingRuntime + TrainJob (k8s/trainer) ------------------------------

TRAINER = {"base": K8S / "trainer" / "base", "cpu": K8S / "trainer" / "cpu"}  # same variants as KUSTOMIZATIONS
TRAINER_CRDS = {"TrainJob": "trainer.kubeflow.org_trainjobs.yaml",
                "TrainingRuntime": "trainer.kubeflow.org_trainingruntimes.yaml"}


@functools.cache
def _render_trainer(name):
    return kustomize(TRAINER[name])


def build_trainer(name):
    return copy.deepcopy(_render_trainer(name))


@pytest.fixture(scope="module")
def trainer_validators():
    """kind -> strict validator from Kubeflow Trainer's CRDs in ../shared/k8s/ (CEL rules not run)."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    validators = {}
    for kind, name in TRAINER_CRDS.items():
        path = CRD_FILE.parent / name
        if not path.exists():
            pytest.skip(f"{kind} CRD not present at {path}")
        version, = [v for v in yaml.safe_load(path.read_text())["spec"]["versions"] if v["name"] == "v1alpha1"]
        schema = strict(version["schema"]["openAPIV3Schema"])
        jsonschema.Draft7Validator.check_schema(schema)
        validators[kind] = jsonschema.Draft7Validator(schema)
    return validators


def runtime_jobs(runtime_spec):
    """replicatedJob name -> its batch/v1 Job spec."""
    return {job["name"]: job["template"]["spec"] for job in runtime_spec["template"]["spec"]["replicatedJobs"]}


def runtime_pods(runtime_spec):
    return {name: job["template"]["spec"] for name, job in runtime_jobs(runtime_spec).items()}


def test_trainer_renders_the_runtime_job_pvc_and_config_without_the_mpijob(kustomization):
    kinds = sorted((obj["kind"], obj["metadata"]["name"]) for obj in build_trainer(kustomization))
    assert kinds == [("ConfigMap", "distjob-config"), ("PersistentVolumeClaim", "distjob-storage"),
                     ("TrainJob", "distjob"), ("TrainingRuntime", "distjob-horovod")]


def test_trainer_objects_match_the_trainer_crds(trainer_validators, kustomization):
    for obj in build_trainer(kustomization):
        if obj["kind"] in trainer_validators:
            errors = [f"{obj['kind']} {'.'.join(map(str, e.absolute_path))}: {e.message}"
                      for e in trainer_validators[obj["kind"]].iter_errors(obj)]
            assert not errors, "\n".join(errors)


NODE_POD = ["spec", "template", "spec", "replicatedJobs", 0, "template", "spec", "template", "spec"]


@pytest.mark.parametrize("kind, mutate", [
    ("TrainJob", _remove(["spec", "runtimeRef"])),                                    # required field
    ("TrainJob", _set(["spec", "trainer", "numNode"], 2)),                            # unknown field
    ("TrainJob", _set(["spec", "trainer", "numProcPerNode"], "4")),                   # wrong type
    ("TrainingRuntime", _set(["spec", "mlPolicy", "mpi", "mpiImplementation"], "MPICH")),  # not in the enum
    ("TrainingRuntime", _set(NODE_POD + ["containers", 0, "readinessProbes"], {})),  # unknown field, nested
    ("TrainingRuntime", _set(["spec", "template", "spec", "replicatedJobs", 1, "dependsOn", 0, "status"],
                             "Running")),                                               # not in the enum
    ("TrainingRuntime", _remove(["spec", "template", "spec", "replicatedJobs", 0, "name"])),  # required, nested
], ids=["no-runtimeRef", "unknown-trainer-field", "numProcPerNode-string", "bad-mpi-enum",
        "unknown-container-field", "bad-dependsOn-status", "replicatedJob-without-name"])
def test_trainer_crd_validation_rejects_a_broken_copy(trainer_validators, kind, mutate):
    broken = one(build_trainer("base"), kind)
    mutate(broken)
    assert not trainer_validators[kind].is_valid(broken)


def test_trainer_runtime_pods_and_jobs_match_the_kubernetes_schema(kubernetes_validate, kustomization):
    runtime = one(build_trainer(kustomization), "TrainingRuntime")["spec"]
    for name, job in runtime_jobs(runtime).items():
        validate_builtin(kubernetes_validate, {"apiVersion": "batch/v1", "kind": "Job",
                                               "metadata": {"name": f"distjob-{name}"}, "spec": job})


def test_trainer_launches_what_the_mpijob_launches(kustomization):
    # The same launcher command, env, sshd, key mount, user and mounts: the multihost rehearsal of
    # the MPIJob's launcher (tests/test_multihost.py) is also the TrainJob's.
    trainer = build_trainer(kustomization)
    trainjob, runtime = one(trainer, "TrainJob")["spec"]["trainer"], one(trainer, "TrainingRuntime")["spec"]
    mpijob = one(build(kustomization), "MPIJob")
    launcher, worker = main_container(replicas(mpijob)["Launcher"]), main_container(replicas(mpijob)["Worker"])
    assert trainjob["command"] + trainjob["args"] == launcher_args(mpijob)
    assert trainjob["env"] == launcher["env"]
    pods = runtime_pods(runtime)
    node = pods["node"]["containers"][0]
    assert node["command"] + node["args"] == worker["command"] + worker["args"]
    assert node["readinessProbe"]["tcpSocket"] == worker["readinessProbe"]["tcpSocket"]
    assert runtime["mlPolicy"]["mpi"]["sshAuthMountPath"] == mpijob["spec"]["sshAuthMountPath"]
    assert runtime["mlPolicy"]["mpi"]["mpiImplementation"] == mpijob["spec"]["mpiImplementation"]
    for name, role in [("node", "Worker"), ("launcher", "Launcher")]:
        container, mpijob_container = pods[name]["containers"][0], main_container(replicas(mpijob)[role])
        assert pods[name]["securityContext"] == replicas(mpijob)[role]["template"]["spec"]["securityContext"]
        assert container["securityContext"] == mpijob_container["securityContext"]
        assert container["volumeMounts"] == mpijob_container["volumeMounts"], name
        assert pods[name]["volumes"] == replicas(mpijob)[role]["template"]["spec"]["volumes"], name
        assert container["resources"] == mpijob_container["resources"], name
        assert container["image"] in images(mpijob)


def test_trainer_ranks_are_nodes_times_processes_per_node(kustomization):
    trainer = build_trainer(kustomization)
    trainjob, runtime = one(trainer, "TrainJob")["spec"]["trainer"], one(trainer, "TrainingRuntime")["spec"]
    assert trainjob["numNodes"] == runtime["mlPolicy"]["numNodes"]
    assert trainjob["numProcPerNode"] == runtime["mlPolicy"]["mpi"]["numProcPerNode"]
    assert int(flag_value(trainjob["args"], "-np")) == trainjob["numNodes"] * trainjob["numProcPerNode"]
    assert flag_value(trainjob["args"], "--hostfile") == HOSTFILE  # where Trainer's MPI plugin mounts it
    assert runtime["mlPolicy"]["mpi"]["runLauncherAsNode"] is False  # all ranks on the nodes
    node = runtime_pods(runtime)["node"]["containers"][0]
    gpus = int(node["resources"]["limits"].get("nvidia.com/gpu", 0))
    assert gpus == (trainjob["numProcPerNode"] if kustomization == "base" else 0)  # one GPU per rank, or none
    assert "nvidia.com/gpu" not in str(runtime_pods(runtime)["launcher"])
    assert "resourcesPerNode" not in trainjob  # resources stay in the runtime's node pods, as in the MPIJob


def test_trainer_launcher_waits_for_ready_nodes_and_failures_restart(kustomization):
    runtime = one(build_trainer(kustomization), "TrainingRuntime")["spec"]
    jobs = runtime["template"]["spec"]["replicatedJobs"]
    assert [job["name"] for job in jobs] == ["node", "launcher"]  # the first replicatedJob cannot dependsOn
    assert jobs[1]["dependsOn"] == [{"name": "node", "status": "Ready"}]  # sshd's readinessProbe
    assert jobs[1]["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    assert runtime["template"]["spec"]["failurePolicy"]["maxRestarts"] >= 1  # a restart resumes (PVC)
    assert runtime["template"]["spec"]["successPolicy"]["targetReplicatedJobs"] == ["launcher"]


# ---- Kueue: the jobs queued, suspended until admitted ---------------------------------------
KUEUE = {"MPIJob": K8S / "overlays" / "kueue", "TrainJob": K8S / "trainer" / "kueue"}
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def queued(kind):
    return one(kustomize(KUEUE[kind]), kind)


def suspended(job):
    return job["spec"]["runPolicy"]["suspend"] if job["kind"] == "MPIJob" else job["spec"]["suspend"]


@pytest.mark.parametrize("kind", list(KUEUE))
def test_kueue_overlay_queues_the_job_suspended_and_changes_nothing_else(kind):
    job = queued(kind)
    assert job["metadata"]["labels"][QUEUE_LABEL] == "distjob"
    assert suspended(job) is True
    plain = one(build("base") if kind == "MPIJob" else build_trainer("base"), kind)
    del job["metadata"]["labels"][QUEUE_LABEL]
    if kind == "MPIJob":
        del job["spec"]["runPolicy"]["suspend"]
    else:
        del job["spec"]["suspend"]
    assert job == plain


def test_queued_jobs_match_their_crds(crd_validator, trainer_validators):
    for kind, validator in (("MPIJob", crd_validator), ("TrainJob", trainer_validators["TrainJob"])):
        errors = [f"{kind} {'.'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(queued(kind))]
        assert not errors, "\n".join(errors)


@pytest.mark.parametrize("kind, mutate", [
    ("MPIJob", _set(["spec", "runPolicy", "suspend"], "yes")),        # wrong type
    ("MPIJob", _set(["spec", "suspend"], True)),                      # the TrainJob's place, not the MPIJob's
    ("TrainJob", _set(["spec", "suspend"], "yes")),                   # wrong type
    ("TrainJob", _set(["spec", "runPolicy"], {"suspend": True})),     # the MPIJob's place, not the TrainJob's
], ids=["mpijob-suspend-string", "mpijob-suspend-misplaced", "trainjob-suspend-string", "trainjob-suspend-misplaced"])
def test_crd_validation_rejects_a_broken_queued_job(crd_validator, trainer_validators, kind, mutate):
    job = queued(kind)
    mutate(job)
    validator = crd_validator if kind == "MPIJob" else trainer_validators["TrainJob"]
    assert not validator.is_valid(job)
