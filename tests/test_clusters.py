"""The cluster files, offline: gpu.yaml against Ray's own schema (and Ray's own config preparation), kuberay.yaml
structurally, and neither exposing the dashboard (8265), GCS (6379) or Ray client (10001) to the world."""

from __future__ import annotations

import copy
import json
import os
import re

import pytest
import yaml

import ray

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_YAML = os.path.join(REPO, "clusters", "gpu.yaml")
KUBERAY_YAML = os.path.join(REPO, "clusters", "kuberay.yaml")
RAY_PORTS = {8265: "dashboard", 6379: "GCS", 10001: "Ray client"}
WORLD = {"0.0.0.0/0", "::/0"}


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def exposed(config) -> list[str]:
    """Every way a config opens a Ray port to the world: AWS inbound rules from 0.0.0.0/0 (or ::/0) whose port range
    covers 8265, 6379 or 10001 (or all ports), Ray started with a public dashboard or client host, a Kubernetes
    service that is not ClusterIP, or an ingress."""
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            if "IpPermissions" in node:
                for rule in node["IpPermissions"] or []:
                    cidrs = {r.get("CidrIp") for r in rule.get("IpRanges", [])} | \
                        {r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])}
                    if not cidrs & WORLD:
                        continue
                    lo, hi = rule.get("FromPort", -1), rule.get("ToPort", -1)
                    for port, name in RAY_PORTS.items():
                        if rule.get("IpProtocol") == "-1" or lo == -1 or lo <= port <= hi:
                            found.append(f"{path}.IpPermissions: {name} port {port} open to {cidrs & WORLD}")
            if node.get("serviceType") not in (None, "ClusterIP"):
                found.append(f"{path}.serviceType: {node['serviceType']} exposes the head service")
            if node.get("enableIngress"):
                found.append(f"{path}.enableIngress: true")
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif isinstance(node, str):
            public = re.search(r"--(dashboard|ray-client-server)-host[= ]0\.0\.0\.0", node)
            if public:
                found.append(f"{path}: {public.group(0)}")

    walk(config, "")
    return found


def test_gpu_yaml_validates_against_rays_schema():
    import jsonschema

    schema_path = os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")
    with open(schema_path) as f:
        schema = json.load(f)
    config = load(GPU_YAML)
    jsonschema.validate(config, schema)
    # and through Ray's own preparation (fills the AWS defaults) and validation, as `ray up` does before launching
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))
    # a key Ray does not know is rejected: the schema test can fail
    bad = copy.deepcopy(config)
    bad["docker"]["shm_size"] = "64g"
    with pytest.raises(jsonschema.ValidationError, match="shm_size"):
        jsonschema.validate(bad, schema)


def test_gpu_yaml_has_what_the_issue_asks():
    c = load(GPU_YAML)
    assert c["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"  # the pinned Ray, not ray-ml
    assert "ray-ml" not in open(GPU_YAML).read().split("# the pinned Ray")[0]
    assert any(o.startswith("--shm-size=") for o in c["docker"]["run_options"])
    types = c["available_node_types"]
    head = types[c["head_node_type"]]
    assert "GPU" not in head["resources"]
    gpus = sorted(t["resources"].get("GPU", 0) for t in types.values())
    assert 1 in gpus and 4 in gpus  # a small and a large GPU type
    assert any(t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot" for t in types.values())
    assert all(t.get("min_workers", 0) == 0 for name, t in types.items() if name != c["head_node_type"])
    assert c["idle_timeout_minutes"] > 0
    assert "/home/ray/ferlab" in c["file_mounts"]
    assert any("pip install" in cmd and "ferlab" in cmd for cmd in c["setup_commands"])
    assert not any("s3 sync" in cmd for cmd in c["setup_commands"])  # no per-node copy of the shards:
    assert "--data s3://YOUR-BUCKET/" in open(GPU_YAML).read()  # every node reads them from the bucket
    # every key carries a comment: each line with a mapping key (outside lists of commands) has a '#'
    lines = [ln for ln in open(GPU_YAML).read().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    keys = [ln for ln in lines if re.match(r"^\s*[A-Za-z_./]+:\s", ln + " ") and not ln.lstrip().startswith("-")]
    nested = r"^\s*(node_config|Ebs|DeviceName|BlockDeviceMappings|InstanceMarketOptions):"  # AWS's own API shapes
    uncommented = [ln for ln in keys if "#" not in ln and not re.match(nested, ln)]
    assert not uncommented, uncommented


def test_kuberay_manifest_structure():
    c = load(KUBERAY_YAML)
    assert c["apiVersion"] == "ray.io/v1" and c["kind"] == "RayJob"
    spec = c["spec"]
    assert "experiments/sweep_transfer.py" in spec["entrypoint"] and spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert f"{ray.__version__}-py311-gpu" in head["image"]
    groups = cluster["workerGroupSpecs"]
    assert len(groups) >= 1
    for g in groups:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        container = g["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
        assert container["image"] == head["image"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/dev/shm" in mounts
        volumes = {v["name"] for v in g["template"]["spec"]["volumes"]}
        assert {m["name"] for m in container["volumeMounts"]} <= volumes


@pytest.mark.parametrize("path", [GPU_YAML, KUBERAY_YAML])
def test_no_ray_port_open_to_the_world(path):
    assert exposed(load(path)) == []


def test_port_check_catches_each_kind_of_exposure():
    c = load(GPU_YAML)
    c["provider"]["security_group"]["IpPermissions"] = [
        {"FromPort": 8000, "ToPort": 9000, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"FromPort": 6379, "ToPort": 6379, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},  # private
        {"FromPort": 10001, "ToPort": 10001, "IpProtocol": "tcp", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
    ]
    c["head_start_ray_commands"][1] += " --dashboard-host=0.0.0.0"
    found = exposed(c)
    assert len(found) == 3, found
    assert "dashboard port 8265" in found[0] and "Ray client port 10001" in found[1] and "0.0.0.0" in found[2]
    k = load(KUBERAY_YAML)
    k["spec"]["rayClusterSpec"]["headGroupSpec"]["serviceType"] = "LoadBalancer"
    assert exposed(k) == [".spec.rayClusterSpec.headGroupSpec.serviceType: LoadBalancer exposes the head service"]


def _launched(config: dict, demand: list[dict], existing: dict | None = None) -> dict:
    """The worker nodes Ray's autoscaler (v1, as `ray up` runs it) launches for a demand on a cluster file."""
    import functools

    from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
    from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for

    scorer = functools.partial(_default_utilization_scorer,
                               node_availability_summary=NodeAvailabilitySummary(node_availabilities={}))
    nodes, left = get_nodes_for(config["available_node_types"], existing or {}, config["head_node_type"],
                                config["max_workers"], demand, scorer)
    assert not left
    return dict(nodes)


def test_gpu_yaml_comments_say_which_nodes_the_autoscaler_launches():
    """What the comments on the node types say, asked of Ray's own scheduler: a trial per GPU launches spot nodes
    first (equal types: the name that sorts last wins), on-demand ones when spot is at its maximum."""
    config = load(GPU_YAML)
    assert _launched(config, [{"CPU": 1, "GPU": 1}] * 3) == {"ray.worker.gpu_small_spot": 3}
    assert _launched(config, [{"CPU": 1, "GPU": 1}] * 3, {"ray.worker.gpu_small_spot": 8}) == \
        {"ray.worker.gpu_small": 3}
    assert _launched(config, [{"CPU": 1, "GPU": 1}] * 4, ) == {"ray.worker.gpu_small_spot": 4}
    assert "launched FIRST" in open(GPU_YAML).read()


def test_local_yaml_is_gpu_yaml_for_the_fake_provider():
    """clusters/local.yaml (tests/test_autoscaling.py runs it) passes Ray's schema and preparation, has gpu.yaml's
    node types, and a trial's worker (1.5 CPUs standing for a GPU) launches one small node per trial, as on AWS."""
    import jsonschema

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        jsonschema.validate(load(os.path.join(REPO, "clusters", "local.yaml")), json.load(f))
    local, gpu = load(os.path.join(REPO, "clusters", "local.yaml")), load(GPU_YAML)
    assert local["provider"]["type"] == "fake_multinode"
    assert set(local["available_node_types"]) == set(gpu["available_node_types"])
    assert local["head_node_type"] == gpu["head_node_type"]
    assert _launched(local, [{"CPU": 1.5}] * 2) == {"ray.worker.gpu_small_spot": 2}
    assert not exposed(local)
