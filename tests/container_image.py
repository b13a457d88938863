"""The container image, tested for real (scripts/check-image runs this).

Builds the base image here (scripts/base-image: mmdebstrap from Debian's
archive), the CPU image on it with podman (scripts/image, with the binary
given), and runs in it:
  1. the quickstart job, whose vectors must equal the same binary's outside;
  2. the Kubernetes example as its manifests say: every shard pod of
     jobs/scale-out/kubernetes/shards-job.yaml (image, args, env with the
     secret's keys, JOB_COMPLETION_INDEX, the ConfigMap's volume mount), then
     commit-job.yaml's pod, against the S3 test server; the committed table
     must equal a one-machine run of the same job.
The image name, command, environment and mounts are read from the YAML and
the AWS Batch JSON, so the examples cannot drift from what is tested.

    python tests/container_image.py BINARY    (S3: EMBEDFLOW_TEST_S3_* set)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib

import numpy as np
import pyarrow.parquet as pq
import yaml
from deltalake import DeltaTable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCALE_OUT = os.path.join(ROOT, "jobs", "scale-out")
TAG = "localhost/embedflow:test"
BASE = "localhost/embedflow-base:bookworm"
MODEL = "all-MiniLM-L6-v2"
PASSED = []


def say(msg):
    print(f"check-image: {msg}", file=sys.stderr, flush=True)


def ok(what):
    PASSED.append(what)
    say(f"ok: {what}")


def run(cmd, **kw):
    """Runs a command, failing with its output when it fails."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise SystemExit(
            f"check-image: FAILED: {' '.join(cmd)} exited {p.returncode}\n"
            f"stdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-6000:]}"
        )
    return p


def podman_runs():
    """Whether podman can start a container here; if not, why."""
    p = subprocess.run(
        ["podman", "run", "--rm", BASE, "true"], capture_output=True, text=True
    )
    return p.returncode == 0, p.stderr.strip()


def engine_config(tmp):
    """Makes podman run here, saying why a setting is needed.

    On these machines the process may not raise its limits
    (CAP_SYS_RESOURCE is not held) while podman asks for nofile=1048576 by
    default, and crun refuses a cgroup v1/v2 hybrid: runc, with the limits
    this process has, runs the same containers.
    """
    works, why = podman_runs()
    if works:
        return
    say(f"podman cannot run a container with its defaults: {why}")
    import resource

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    conf = os.path.join(tmp, "containers.conf")
    with open(conf, "w") as f:
        f.write(
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            '[engine]\nruntime = "runc"\n'
        )
    os.environ["CONTAINERS_CONF"] = conf
    works, why2 = podman_runs()
    if not works:
        raise SystemExit(
            f"check-image: FAILED: podman cannot run containers here: {why}; "
            f"with runc and this process's limits ({conf}): {why2}"
        )
    say(f"podman runs with runc and nofile={nofile}, nproc={nproc} ({conf})")


def build(binary):
    t = time.time()
    run(
        [
            os.path.join(ROOT, "scripts", "image"),
            "--binary", binary, "--models", MODEL, "--tag", TAG,
            "--", "--build-arg", f"BASE_IMAGE={BASE}", "--network", "host",
        ]
    )
    inspect = json.loads(run(["podman", "image", "inspect", TAG]).stdout)[0]
    cfg = inspect["Config"]
    assert cfg["User"] == "10001", cfg["User"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["EMBEDFLOW_HOME"] == "/opt/embedflow", env
    assert cfg["Entrypoint"] == ["embedflow"], cfg["Entrypoint"]
    ok(f"image {TAG} built in {time.time() - t:.0f} s ({inspect['Size'] / 1e6:.0f} MB with this binary and {MODEL}), user 10001, EMBEDFLOW_HOME=/opt/embedflow")
    who = run(["podman", "run", "--rm", "--entrypoint", "id", TAG, "-u"]).stdout.strip()
    assert who == "10001", who
    ok("it runs as uid 10001, not root")


def vectors(path, column="embedding"):
    t = pq.read_table(path)
    return t, np.array(t.column(column).to_pylist(), dtype=np.float32)


def quickstart(tmp, binary):
    out = os.path.join(tmp, "qs-out")
    os.makedirs(out)
    os.chmod(out, 0o777)
    run(
        [
            "podman", "run", "--rm", "--network", "host",
            "-v", f"{ROOT}/sample_data:/work/sample_data:ro",
            "-v", f"{ROOT}/jobs:/work/jobs:ro",
            "-v", f"{out}:/work/out",
            TAG, "run", "jobs/quickstart.toml", "--progress", "off",
        ]
    )
    here = os.path.join(tmp, "qs-here")
    run(
        [
            binary, "run", "jobs/quickstart.toml", "--progress", "off",
            "--set", f"output.path={here}/news_embedded.parquet",
            "--set", f"output.documents_path={here}/news_documents.parquet",
        ],
        cwd=ROOT,
    )
    for name in ["news_embedded.parquet", "news_documents.parquet"]:
        a, va = vectors(os.path.join(out, name))
        b, vb = vectors(os.path.join(here, name))
        assert a.num_rows == b.num_rows > 0, (name, a.num_rows, b.num_rows)
        assert np.array_equal(va, vb), (name, float(np.abs(va - vb).max()))
    ok(f"quickstart in the image: {a.num_rows} document vectors, equal to the binary's outside")


def manifests():
    k8s = os.path.join(SCALE_OUT, "kubernetes")
    shards = yaml.safe_load(open(os.path.join(k8s, "shards-job.yaml")))
    commit = yaml.safe_load(open(os.path.join(k8s, "commit-job.yaml")))
    batch = json.load(open(os.path.join(SCALE_OUT, "aws-batch", "job-definition.json")))
    return shards, commit, batch


def image_of(container):
    """The manifest's image, which must be this version's embedflow."""
    image = container["image"]
    version = tomllib.load(open(os.path.join(ROOT, "Cargo.toml"), "rb"))["package"]["version"]
    assert image.endswith(f"/embedflow:{version}"), (image, version)
    return TAG


def pod_command(pod_spec, secrets, config_dir, extra_env):
    """`podman run` for the pod's one container, as its spec says."""
    (c,) = pod_spec["containers"]
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    cmd = ["podman", "run", "--rm", "--network", "host"]
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        assert v["configMap"]["name"] == "embedflow-jobs", v
        cmd += ["-v", f"{config_dir}:{m['mountPath']}:ro"]
    env = dict(extra_env)
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[ref["name"]][ref["key"]]
    for k, v in env.items():
        cmd += ["-e", f"{k}={v}"]
    return cmd + [image_of(c)] + c.get("args", [])


def job_file(tmp, bucket, s3):
    """jobs/scale-out/news_sharded.toml with the table and input on S3 (as
    its comment says a cluster needs) and units small enough to share."""
    text = open(os.path.join(SCALE_OUT, "news_sharded.toml")).read()
    text = text.replace('path = "sample_data/news.parquet"', f'path = "s3://{bucket}/news.parquet"')
    text = text.replace('path = "out/news_sharded_table"', f'path = "s3://{bucket}/news_table"')
    text = text.replace("unit_rows = 2048", "unit_rows = 32")
    assert text.count(f"s3://{bucket}/") == 2 and "unit_rows = 32" in text, text
    text += f'\n[s3]\nendpoint = "{s3["endpoint"]}"\n'
    folder = os.path.join(tmp, "configmap")
    os.makedirs(folder)
    with open(os.path.join(folder, "news_sharded.toml"), "w") as f:
        f.write(text)
    return folder


def s3_env():
    return {
        "endpoint": os.environ["EMBEDFLOW_TEST_S3_ENDPOINT"],
        "key": os.environ["EMBEDFLOW_TEST_S3_ACCESS_KEY"],
        "secret": os.environ["EMBEDFLOW_TEST_S3_SECRET_KEY"],
        "root": os.environ["EMBEDFLOW_TEST_S3_ROOT"],
    }


def run_pods(commands, parallelism):
    """Runs the pods, `parallelism` at a time (at most the cores here)."""
    pending = list(commands)
    running = []
    while pending or running:
        while pending and len(running) < parallelism:
            running.append(subprocess.Popen(pending.pop(0), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        p = running.pop(0)
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"check-image: FAILED: a pod exited {p.returncode}: {' '.join(p.args)}\n{out}\n{err}")


def kubernetes(tmp, binary):
    shards, commit, batch = manifests()
    s3 = s3_env()
    bucket = f"image-test-{os.getpid()}"
    os.makedirs(os.path.join(s3["root"], bucket))
    shutil.copy(os.path.join(ROOT, "sample_data", "news.parquet"), os.path.join(s3["root"], bucket, "news.parquet"))
    config = job_file(tmp, bucket, s3)
    secrets = {"embedflow-s3": {"access_key_id": s3["key"], "secret_access_key": s3["secret"]}}
    spec = shards["spec"]
    n = spec["completions"]
    assert spec["completionMode"] == "Indexed", spec
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    shard_env = {e["name"]: e.get("value") for e in c["env"]}
    assert shard_env["EMBEDFLOW_SHARDS"] == str(n), "EMBEDFLOW_SHARDS must equal completions"
    # AWS Batch runs the same image and command.
    props = batch["containerProperties"]
    assert props["image"] == c["image"] and props["command"] == c["args"], (props, c)
    pods = [pod_command(pod, secrets, config, {"JOB_COMPLETION_INDEX": str(i)}) for i in range(n)]
    t = time.time()
    run_pods(pods, min(spec.get("parallelism", 1), os.cpu_count() or 1))
    run(pod_command(commit["spec"]["template"]["spec"], secrets, config, {}))
    ok(f"{n} shard pods and the commit pod ran as the manifests say ({time.time() - t:.0f} s)")
    # One machine, the same job, outside the image.
    single = os.path.join(tmp, "single.toml")
    text = open(os.path.join(config, "news_sharded.toml")).read()
    with open(single, "w") as f:
        f.write(text.replace(f"s3://{bucket}/news_table", os.path.join(tmp, "single_table")))
    env = dict(os.environ, AWS_ACCESS_KEY_ID=s3["key"], AWS_SECRET_ACCESS_KEY=s3["secret"])
    run([binary, "run", single, "--progress", "off"], env=env)
    storage = {
        "AWS_ENDPOINT_URL": s3["endpoint"], "AWS_ACCESS_KEY_ID": s3["key"],
        "AWS_SECRET_ACCESS_KEY": s3["secret"], "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
    }
    sharded = DeltaTable(f"s3://{bucket}/news_table", storage_options=storage)
    one = DeltaTable(os.path.join(tmp, "single_table"))
    assert sharded.version() == 0, sharded.version()

    def rows(t):
        tab = t.to_pyarrow_table().sort_by([("article_id", "ascending"), ("chunk_index", "ascending")])
        return tab, np.array(tab.column("embedding").to_pylist(), dtype=np.float32)

    a, va = rows(sharded)
    b, vb = rows(one)
    assert a.num_rows == b.num_rows > 0, (a.num_rows, b.num_rows)
    for col in ["article_id", "chunk_index", "chunk_start", "chunk_end", "title"]:
        assert a.column(col).to_pylist() == b.column(col).to_pylist(), col
    diff = float(np.abs(va - vb).max())
    assert diff < 1e-5, diff
    ok(f"the committed table (one Delta version, {a.num_rows} rows) equals a one-machine run's (max difference {diff:.1e})")


# What the CUDA base image (CUDA 13 runtime with cuDNN 9) provides: the
# libraries the CUDA provider may lack on any other base.
CUDA_BASE_LIBS = ("libcudart.so", "libcublas.so", "libcublasLt.so", "libcufft.so",
                  "libcurand.so", "libcudnn.so", "libnvrtc.so", "libnvJitLink.so", "libcuda.so")


def cuda(binary):
    """The CUDA image, as far as it goes without a GPU or NVIDIA's base:
    built on the local base, its ONNX Runtime (the CUDA build) runs the
    quickstart's model on the CPU, and its CUDA provider lacks nothing but
    what the CUDA 13 + cuDNN 9 base provides."""
    t = time.time()
    run([
        os.path.join(ROOT, "scripts", "image"), "--cuda", "--binary", binary, "--tag", TAG,
        "--", "--build-arg", f"BASE_IMAGE={BASE}", "--build-arg", f"CUDA_IMAGE={BASE}", "--network", "host",
    ])
    image = f"{TAG}-cuda"
    provider = "/opt/embedflow/onnxruntime/1.31.1/cuda/libonnxruntime_providers_cuda.so"
    ldd = run(["podman", "run", "--rm", "--entrypoint", "ldd", image, provider]).stdout
    missing = sorted({l.split()[0] for l in ldd.splitlines() if "not found" in l})
    other = [m for m in missing if not m.startswith(CUDA_BASE_LIBS)]
    assert missing and not other, f"the CUDA provider lacks {other} (beyond the CUDA base's {missing})"
    size = json.loads(run(["podman", "image", "inspect", image]).stdout)[0]["Size"]
    ok(f"CUDA image built on the local base in {time.time() - t:.0f} s ({size / 1e6:.0f} MB without NVIDIA's libraries); its provider lacks only the CUDA base's {', '.join(missing)}")
    text = os.path.join(ROOT, "sample_data")
    tmp = tempfile.mkdtemp(prefix="embedflow-cuda-")
    os.chmod(tmp, 0o777)
    run(["podman", "run", "--rm", "-v", f"{text}:/work/sample_data:ro", "-v", f"{tmp}:/work/out",
         "-v", f"{ROOT}/../shared/models/{MODEL}:/models/{MODEL}:ro", image,
         "embed", "sample_data/news.parquet", "out/o.parquet", "--model", f"/models/{MODEL}",
         "--text-template", "{outlet}: {title}", "--progress", "off"])
    a, va = vectors(os.path.join(tmp, "o.parquet"))
    assert a.num_rows == 295, a.num_rows
    wrong = subprocess.run(["podman", "run", "--rm", "-v", f"{text}:/work/sample_data:ro", "-v", f"{tmp}:/work/out",
                            "-v", f"{ROOT}/../shared/models/{MODEL}:/models/{MODEL}:ro", image,
                            "embed", "sample_data/news.parquet", "out/c.parquet", "--model", f"/models/{MODEL}",
                            "--text-template", "{outlet}: {title}", "--progress", "off", "--device", "cuda"],
                           capture_output=True, text=True)
    assert not os.path.exists(os.path.join(tmp, "c.parquet"))
    shutil.rmtree(tmp, ignore_errors=True)
    assert wrong.returncode != 0 and "cuda" in wrong.stderr.lower(), wrong.stderr
    ok(f"the CUDA image's ONNX Runtime embeds on the CPU ({a.num_rows} titles); asked for CUDA without a GPU it exits {wrong.returncode}: {wrong.stderr.strip().splitlines()[-1][:160] if wrong.stderr.strip() else ''}")


def main():
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory(prefix="embedflow-image-") as tmp:
        run([os.path.join(ROOT, "scripts", "base-image")])
        engine_config(tmp)
        build(binary)
        quickstart(tmp, binary)
        kubernetes(tmp, binary)
        cuda(binary)
    say(f"{len(PASSED)} passed, 0 failed")


if __name__ == "__main__":
    main()
