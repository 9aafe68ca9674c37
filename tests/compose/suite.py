#!/usr/bin/env python3
"""The shipped compose files, run for real under load (issue 13).

Runs deploy/compose/docker-compose.scale.yml and deploy/compose/docker-compose.yml with the
overrides beside this file (they swap the broker and GeoServer images, which cannot be had here,
for simulated nodes: `geolb sim` from the geolb image), with geolb's image `geolb` built from the
project's Dockerfile (`.ci/check-compose` builds it: the `prebuilt` target on a base made here).
A client on the host sends a steady load through the published port 8000: 4 readers (WMS GetMap)
and 1 writer (REST POST, which only the master may take), each on a keep-alive connection. A
request fails on a transport error or a non-2xx answer; reads and writes are counted apart. The
`X-Node` header says which node answered (a scaled replica names itself by its container id).

Scenarios (each checks what the issue asks and prints its timings):
  1. up --scale geoserver=3: reads spread over the master and the 3 replicas, writes reach the
     master only, the lb container's HEALTHCHECK reports healthy;
  2. --scale geoserver=5, then 2: time for each new replica to get reads (bound: resolve_interval
     + rise x interval), time for each removed one to leave /status; 0 failed requests;
  3. docker kill one replica, make another drop every packet (iptables DROP in its network
     namespace): 0 failed reads; time for each to leave the pool (bound: fall x interval +
     timeout, or resolve_interval once out of DNS) and to come back once restored;
  4. docker stop the lb during long requests: they finish, a new request gets no answer, exit 0;
  5. docker restart the lb with a changed config in a mounted directory: serving again within
     seconds, the change in force; docker kill -s HUP after another change: reloaded, 0 failed;
  6. the fixed master + slave file: the master stopped, reads go on from the slave, writes get
     the 503 naming the empty master pool; the master started, writes resume on it.

  python3 tests/compose/suite.py            # the image `geolb` must exist (see .ci/check-compose)
  python3 tests/compose/suite.py fixed      # one file's scenarios only (`scale`: 1 to 5)

Without a Docker engine it skips (exit 0) with a message, unless GEOLB_COMPOSE_REQUIRED=1 (CI),
where it fails. Exit 1 when a check fails; every failed check is listed at the end.
"""

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = "geolbsuite"
PROXY = ("127.0.0.1", 8000)
ADMIN = ("127.0.0.1", 9090)
TOKEN = "suite-token"

# geolb's shipped defaults ([health] in config.toml, resolve_interval in the compose file).
INTERVAL, TIMEOUT, RISE, FALL, RESOLVE = 2.0, 1.0, 2, 3, 5.0
JOIN_BOUND = RESOLVE + RISE * INTERVAL
LEAVE_BOUND = FALL * INTERVAL + TIMEOUT
SLACK = 1.0  # scheduling on a loaded 2-core machine, Docker's DNS

GETMAP = ("/geoserver/wms?service=WMS&version=1.3.0&request=GetMap&layers=topp:states"
          "&bbox=-180,-90,180,90&width=256&height=256&crs=EPSG:4326&format=image/png")
TILE = ("/geoserver/gwc/service/wmts?SERVICE=WMTS&VERSION=1.0.0&REQUEST=GetTile"
        "&LAYER=topp:states&STYLE=&TILEMATRIXSET=EPSG:4326&TILEMATRIX=EPSG:4326:0"
        "&TILEROW=0&TILECOL=0&FORMAT=image/png")

failures = []
timings = []


def log(msg):
    print(f"[compose {time.monotonic() - START:6.1f}s] {msg}", flush=True)


def check(ok, what):
    log(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)
    return ok


def timing(what, seconds, bound=None):
    text = f"{what}: {seconds:.1f} s" + (f" (bound {bound:.0f} s)" if bound else "")
    timings.append(text)
    log("time  " + text)


def sh(*args, check_rc=True, timeout=120):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()[-2000:]}")
    return r.stdout


class Compose:
    def __init__(self, shipped, override):
        self.base = ["docker-compose", "-p", PROJECT,
                     "-f", os.path.join(ROOT, "deploy", "compose", shipped),
                     "-f", os.path.join(HERE, override)]

    def __call__(self, *args, timeout=180):
        return sh(*self.base, *args, timeout=timeout)

    def dump_logs_if_failed(self, failed_before, *services):
        """The services' logs, when a check failed since `failed_before` (a CI run leaves
        nothing else to read): the last 100 lines but answered reads printed, all kept in /tmp."""
        if len(failures) == failed_before:
            return
        for service in services:
            r = subprocess.run([*self.base, "logs", "--no-color", service],
                               capture_output=True, text=True, timeout=60)
            saved = os.path.join(tempfile.gettempdir(), f"geolb-compose-{service}.log")
            with open(saved, "w") as f:
                f.write(r.stdout + r.stderr)
            # Answered reads are the bulk of an access log, and rarely the story.
            lines = [l for l in (r.stdout + r.stderr).splitlines()
                     if not ('" reads ' in l and " 200 in=" in l)]
            print(f"--- docker-compose logs {service}, but answered reads (last 100 lines; "
                  f"all in {saved}) ---",
                  *lines[-100:], sep="\n", flush=True)

    def ids(self, service):
        return [i[:12] for i in self("ps", "-q", service).split()]


def container(cid, fmt):
    return sh("docker", "inspect", "-f", fmt, cid).strip()


def ip_of(cid):
    return container(cid, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")


def wait_for(what, within, cond, every=0.1):
    """Polls cond() until it returns something truthy; None (and a failed check) at the deadline."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            value = cond()
        except (OSError, http.client.HTTPException, ValueError):
            value = None
        if value:
            return value
        time.sleep(every)
    check(False, f"{what} (waited {within:.0f} s)")
    return None


def request(addr, method, target, body=None, headers=None, timeout=10):
    conn = http.client.HTTPConnection(*addr, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheader("X-Node", ""), r.read()
    finally:
        conn.close()


def status():
    code, _, body = request(ADMIN, "GET", "/status", timeout=3)
    return json.loads(body) if code == 200 else None


def up_nodes():
    s = status()
    return {n["name"] for n in s["nodes"] if n["state"] == "up"} if s else set()


def listed_nodes():
    s = status()
    return {n["name"] for n in s["nodes"]} if s else set()


def metric(name):
    _, _, body = request(ADMIN, "GET", "/metrics", timeout=3)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


class Load:
    """4 readers and 1 writer, closed loop with a short pause, through the published port."""

    def __init__(self, readers=4, writers=1, target=GETMAP, pause=0.02):
        self.samples = []  # (start, end, kind, ok, node, what)
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=("read", target, pause), daemon=True)
                        for _ in range(readers)]
        self.threads += [threading.Thread(target=self.run, args=("write", None, pause * 5), daemon=True)
                         for _ in range(writers)]
        self.seq = 0
        for t in self.threads:
            t.start()

    def run(self, kind, target, pause):
        conn = None
        while not self.stop_flag.is_set():
            if conn is None:
                conn = http.client.HTTPConnection(*PROXY, timeout=30)
            start = time.monotonic()
            try:
                if kind == "read":
                    conn.request("GET", target)
                else:
                    with self.lock:
                        self.seq += 1
                        n = self.seq
                    conn.request("POST", "/geoserver/rest/workspaces",
                                 body=f"<workspace><name>suite{n}</name></workspace>",
                                 headers={"Content-Type": "text/xml"})
                r = conn.getresponse()
                body = r.read()
                ok = 200 <= r.status < 300
                what = str(r.status) if ok else f"{r.status} {body[:120]!r}"
                node = r.getheader("X-Node", "")
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                ok, what, node = False, f"{type(e).__name__}: {e}", ""
                conn.close()
                conn = None
            with self.lock:
                self.samples.append((start, time.monotonic(), kind, ok, node, what))
            time.sleep(pause)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=40)

    def since(self, t0, kind=None):
        with self.lock:
            return [s for s in self.samples if s[0] >= t0 and (kind is None or s[2] == kind)]

    def failed(self, t0, kind):
        return [s for s in self.since(t0, kind) if not s[3]]

    def first_answer(self, node, t0):
        for s in self.since(t0, "read"):
            if s[4] == node and s[3]:
                return s[1]
        return None

    def summary(self, t0, label):
        reads, writes = self.since(t0, "read"), self.since(t0, "write")
        fr, fw = self.failed(t0, "read"), self.failed(t0, "write")
        log(f"load  {label}: reads {len(reads)} ({len(fr)} failed), writes {len(writes)} ({len(fw)} failed)")
        for s in (fr + fw)[:5]:
            log(f"      failed {s[2]} at +{s[0] - t0:.1f} s after {s[1] - s[0]:.2f} s: {s[5]}")
        for kind, samples in (("read", reads), ("write", writes)):
            slow = max(samples, key=lambda s: s[1] - s[0], default=None)
            if slow and slow[1] - slow[0] > 1:
                log(f"      slowest {kind} at +{slow[0] - t0:.1f} s took {slow[1] - slow[0]:.2f} s: "
                    f"{slow[5]} from {slow[4] or '-'}")
        return fr, fw


def node_name(ip):
    return f"geoserver-{ip}:8080"


def write_config(directory, routes):
    """The shipped config.toml plus `routes`, replaced through a new file (a new inode)."""
    with open(os.path.join(ROOT, "config.toml")) as f:
        text = f.read()
    tmp = os.path.join(directory, ".config.toml.new")
    # The host's clients reach geolb through docker-proxy: all share the bridge gateway's
    # address, so read-your-writes by address would pin every reader to the master after any
    # write. Clients are told apart by the cookie only (remote clients keep their addresses).
    text = text.replace("by_address = true", "by_address = false")
    with open(tmp, "w") as f:
        f.write(text + "\n# Added by tests/compose/suite.py\n" + routes)
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(directory, "config.toml"))


TILES_TO_MASTER = '[[routes]]\nprefix = "/geoserver/gwc/"\npool = "master"\n'


def tiles_nodes(n=12):
    return {request(PROXY, "GET", TILE)[1] for _ in range(n)}


def scale_file(conf):
    c = Compose("docker-compose.scale.yml", "scale.override.yml")
    c("down", "-v", "-t", "2")
    failed_before = len(failures)

    # 1. up --scale geoserver=3
    log("scenario 1: up --scale geoserver=3")
    t = time.monotonic()
    c("up", "-d", "--no-build", "--scale", "geoserver=3")
    lb = c.ids("lb")[0]
    replicas = c.ids("geoserver")
    check(len(replicas) == 3, f"3 replicas running ({replicas})")
    wait_for("geolb sees the master and 3 replicas up", 30, lambda: len(up_nodes()) == 4)
    timing("up --scale geoserver=3 to every node up in geolb", time.monotonic() - t)
    load = Load()
    t0 = time.monotonic()
    time.sleep(6)
    seen = {s[4] for s in load.since(t0, "read") if s[3]}
    check(seen == set(replicas) | {"geoserver-master"},
          f"reads spread over the master and the 3 replicas (seen {sorted(seen)})")
    writers = {s[4] for s in load.since(t0, "write") if s[3]}
    check(writers == {"geoserver-master"}, f"writes reach the master only (seen {sorted(writers)})")
    health = wait_for("the lb container's HEALTHCHECK reports healthy", 40,
                      lambda: container(lb, "{{.State.Health.Status}}") == "healthy" or None)
    if health:
        log("ok    HEALTHCHECK: healthy")
    fr, fw = load.summary(t0, "scenario 1")
    check(not fr and not fw, "scenario 1: 0 failed requests")

    # 2. scale to 5, then to 2
    log("scenario 2: --scale geoserver=5, then =2")
    t0 = time.monotonic()
    c("up", "-d", "--no-build", "--no-recreate", "--scale", "geoserver=5")
    started = time.monotonic()
    new = [r for r in c.ids("geoserver") if r not in replicas]
    check(len(new) == 2, f"2 new replicas ({new})")
    for r in new:
        at = wait_for(f"new replica {r} gets reads", JOIN_BOUND + 10,
                      lambda r=r: load.first_answer(r, t0))
        if at:
            timing(f"new replica {r} to its first read", at - started, JOIN_BOUND)
            check(at - started <= JOIN_BOUND + SLACK, f"replica {r} joined within the bound")
    time.sleep(2)
    before = c.ids("geoserver")
    ips = {r: ip_of(r) for r in before}
    t_down = time.monotonic()
    c("up", "-d", "--no-build", "--no-recreate", "--scale", "geoserver=2")
    scaled = time.monotonic() - t_down
    kept = c.ids("geoserver")
    removed = [r for r in before if r not in kept]
    check(len(removed) == 3, f"3 replicas removed ({removed}, in {scaled:.1f} s)")
    for r in removed:
        name = node_name(ips[r])
        gone = wait_for(f"removed replica {r} leaves /status", RESOLVE + 10,
                        lambda name=name: name not in listed_nodes() and time.monotonic())
        if gone:
            timing(f"removed replica {r} ({name}) out of /status after the scale-down began",
                   gone - t_down, RESOLVE + scaled)
    time.sleep(3)
    fr, fw = load.summary(t0, "scenario 2")
    check(not fr and not fw, "scenario 2: 0 failed requests while scaling up and down")
    load.stop()

    # 3. kill one replica, black-hole another
    log("scenario 3: docker kill a replica, iptables DROP in another's namespace")
    c("up", "-d", "--no-build", "--no-recreate", "--scale", "geoserver=3")
    replicas = c.ids("geoserver")
    ips = {r: ip_of(r) for r in replicas}
    wait_for("3 replicas up again", 30, lambda: len(up_nodes()) == 4)
    load = Load()
    time.sleep(3)
    killed, dropped = replicas[0], replicas[1]
    pid = container(dropped, "{{.State.Pid}}")
    t0 = time.monotonic()
    sh("docker", "kill", killed)
    cuts = {killed: time.monotonic()}
    for chain in ("INPUT", "OUTPUT"):
        sh("nsenter", "-t", pid, "-n", "iptables", "-A", chain, "-j", "DROP")
    cuts[dropped] = time.monotonic()
    for r, how in ((killed, "killed"), (dropped, "dropping packets")):
        cut = cuts[r]
        name = node_name(ips[r])
        gone = wait_for(f"{how} replica {r} leaves the pool", LEAVE_BOUND + 10,
                        lambda name=name: name not in up_nodes() and time.monotonic())
        if gone:
            timing(f"{how} replica out of the pool", gone - cut, LEAVE_BOUND)
            check(gone - cut <= LEAVE_BOUND + SLACK, f"{how} replica left within the bound")
    time.sleep(2)
    t_back = time.monotonic()
    sh("docker", "start", killed)
    for chain in ("INPUT", "OUTPUT"):
        sh("nsenter", "-t", pid, "-n", "iptables", "-D", chain, "-j", "DROP")
    for r, how, bound in ((killed, "restarted", JOIN_BOUND), (dropped, "reconnected", RISE * INTERVAL + TIMEOUT)):
        at = wait_for(f"{how} replica {r} gets reads again", bound + 10,
                      lambda r=r: load.first_answer(r, t_back))
        if at:
            timing(f"{how} replica back to its first read", at - t_back, bound)
            check(at - t_back <= bound + SLACK, f"{how} replica came back within the bound")
    fr, fw = load.summary(t0, "scenario 3")
    check(not fr, "scenario 3: 0 failed reads")
    check(not fw, "scenario 3: 0 failed writes (the master was untouched)")
    load.stop()

    # 4. docker stop the lb during long requests
    log("scenario 4: docker stop the lb during long requests")
    long_results = []

    def long_request():
        try:
            code, node, body = request(PROXY, "GET", "/geoserver/__sim/slow?ms=4000", timeout=30)
            long_results.append((code, node))
        except (OSError, http.client.HTTPException) as e:
            long_results.append((type(e).__name__, ""))

    longs = [threading.Thread(target=long_request) for _ in range(3)]
    for t in longs:
        t.start()
    time.sleep(1)
    t_stop = time.monotonic()
    stopper = threading.Thread(target=lambda: sh("docker", "stop", lb, timeout=60))
    stopper.start()
    time.sleep(1)
    try:
        code, _, _ = request(PROXY, "GET", GETMAP, timeout=5)
        late = f"answered {code}"
    except (OSError, http.client.HTTPException) as e:
        late = f"no service ({type(e).__name__})"
    check(late.startswith("no service"), f"a new request during the stop: {late}")
    stopper.join()
    timing("docker stop with 3 requests of 4 s in flight", time.monotonic() - t_stop)
    for t in longs:
        t.join()
    check(len(long_results) == 3 and all(r[0] == 200 for r in long_results),
          f"the 3 long requests finished with 200: {long_results}")
    code = container(lb, "{{.State.ExitCode}}")
    check(code == "0", f"geolb exited {code} on docker stop")

    # 5. docker restart with a changed config; SIGHUP
    log("scenario 5: docker restart with a changed config, then docker kill -s HUP")
    sh("docker", "start", lb)
    wait_for("the lb serves again", 20, lambda: request(PROXY, "GET", GETMAP, timeout=3)[0] == 200)
    wait_for("3 replicas up", 30, lambda: len(up_nodes()) == 4)
    check(len(tiles_nodes() - {"geoserver-master"}) > 0, "before the change, tiles come from replicas too")
    write_config(conf, TILES_TO_MASTER)
    t_restart = time.monotonic()
    sh("docker", "restart", lb)
    serving = wait_for("the restarted lb serves", 20,
                       lambda: request(PROXY, "GET", GETMAP, timeout=3)[0] == 200 and time.monotonic())
    if serving:
        timing("docker restart to the first answer", serving - t_restart)
    check(tiles_nodes() == {"geoserver-master"}, "after the restart the new config is in force (tiles from the master)")
    wait_for("3 replicas up after the restart", 30, lambda: len(up_nodes()) == 4)
    load = Load(target=TILE)
    t0 = time.monotonic()
    time.sleep(2)
    write_config(conf, "")
    reloads = metric('geolb_config_reloads_total{result="ok"}')
    sh("docker", "kill", "-s", "HUP", lb)
    wait_for("the HUP reload counted", 10,
             lambda: metric('geolb_config_reloads_total{result="ok"}') == reloads + 1)
    t_hup = time.monotonic()
    wait_for("after the HUP tiles spread over the replicas again", 10,
             lambda: any(s[3] and s[4] != "geoserver-master" for s in load.since(t_hup, "read")))
    time.sleep(2)
    fr, fw = load.summary(t0, "scenario 5 (HUP)")
    check(not fr and not fw, "scenario 5: 0 failed requests across the HUP reload")
    load.stop()
    c.dump_logs_if_failed(failed_before, "lb")
    c("down", "-v", "-t", "5")


def fixed_file():
    c = Compose("docker-compose.yml", "fixed.override.yml")
    c("down", "-v", "-t", "2")
    failed_before = len(failures)
    log("scenario 6: the fixed master + slave file, the master stopped and started")
    c("up", "-d", "--no-build")
    wait_for("master and slave up", 30, lambda: up_nodes() == {"geoserver-master", "geoserver-slave"})
    s = status() or {"nodes": []}
    slave = [n for n in s["nodes"] if n["name"] == "geoserver-slave"]
    check(bool(slave) and slave[0]["master"] is False, "the JMS slave is no master candidate")
    load = Load()
    t0 = time.monotonic()
    time.sleep(3)
    t_stop = time.monotonic()
    c("stop", "geoserver-master")
    stopped = time.monotonic()
    first_503 = wait_for("writes get 503 while the master is down", 20, lambda: next(
        (s[1] for s in load.since(t_stop, "write") if s[5].startswith("503")), None))
    if first_503:
        timing("master stopped to writes answered 503", first_503 - t_stop)
    time.sleep(3)
    window = [s for s in load.since(stopped + 1, "write") if s[1] < time.monotonic()]
    bad = [s for s in window if not s[5].startswith("503")]
    check(window and not bad, f"writes while the master is down: all 503 ({len(window)}; other: {[s[5] for s in bad[:3]]})")
    check(bool(window) and "no healthy master" in window[0][5],
          f"the 503 names the empty master pool: {window[0][5] if window else None}")
    reads = load.since(stopped + 1, "read")
    check(reads and all(s[3] and s[4] == "geoserver-slave" for s in reads),
          f"reads go on from the slave ({len(reads)}, failed {len([s for s in reads if not s[3]])})")
    t_start = time.monotonic()
    c("start", "geoserver-master")
    resumed = wait_for("writes resume on the master", 30, lambda: next(
        (s[1] for s in load.since(t_start, "write") if s[3] and s[4] == "geoserver-master"), None))
    if resumed:
        timing("master started to writes answered by it again", resumed - t_start, RISE * INTERVAL)
    time.sleep(1)
    fr, fw = load.summary(t0, "scenario 6")
    check(not fr, "scenario 6: 0 failed reads")
    # The failed writes are the master's outage, and nothing else: each one a 503 naming the empty
    # master pool, answered between the stop and the first write the master took again.
    end = resumed or time.monotonic()
    stray = [s for s in fw if not (t_stop <= s[1] <= end and "no healthy master" in s[5])]
    check(not stray, f"scenario 6: the {len(fw)} failed writes are all 503s of the outage "
          f"(other: {[(round(s[1] - t0, 1), s[5]) for s in stray[:3]]})")
    load.stop()
    c.dump_logs_if_failed(failed_before, "lb", "geoserver-master")
    c("down", "-v", "-t", "5")


def main():
    # `suite.py fixed` (or `scale`) runs one file's scenarios only, for a developer.
    which = sys.argv[1:] or ["scale", "fixed"]
    unknown = [w for w in which if w not in ("scale", "fixed")]
    if unknown:
        print(f"compose suite: unknown scenario set {unknown}: `scale` or `fixed`", file=sys.stderr)
        return 2
    required = os.environ.get("GEOLB_COMPOSE_REQUIRED") == "1"
    missing = [t for t in ("docker", "docker-compose", "nsenter", "iptables") if shutil.which(t) is None]
    engine = not missing and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    if not engine:
        why = f"missing {', '.join(missing)}" if missing else "no Docker engine answers (docker info)"
        if required:
            print(f"compose suite: FAILED: {why} (GEOLB_COMPOSE_REQUIRED=1)", file=sys.stderr)
            return 1
        print(f"compose suite: skipped: {why}")
        return 0
    if subprocess.run(["docker", "image", "inspect", "geolb"], capture_output=True).returncode != 0:
        print("compose suite: FAILED: no image `geolb`: build it first (bash .ci/check-compose does)",
              file=sys.stderr)
        return 1
    conf = tempfile.mkdtemp(prefix="geolb-compose-")
    os.chmod(conf, 0o755)
    write_config(conf, "")
    os.environ["GEOLB_SUITE_CONF"] = conf
    try:
        if "scale" in which:
            scale_file(conf)
        if "fixed" in which:
            fixed_file()
    except Exception as e:  # a scenario that could not run is a failure, with what broke
        check(False, f"the suite ran to its end ({type(e).__name__}: {e})")
    finally:
        for shipped, override in (("docker-compose.scale.yml", "scale.override.yml"),
                                  ("docker-compose.yml", "fixed.override.yml")):
            try:
                Compose(shipped, override)("down", "-v", "-t", "2")
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"compose suite: cleanup: {e}", file=sys.stderr)
        shutil.rmtree(conf, ignore_errors=True)
    print(f"\ncompose suite, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, timings:")
    for t in timings:
        print(f"  {t}")
    if failures:
        print(f"\ncompose suite: {len(failures)} check(s) FAILED:")
        for f in failures:
            print(f"  {f}")
        return 1
    print(f"\ncompose suite: every check passed in {time.monotonic() - START:.0f} s")
    return 0


START = time.monotonic()

if __name__ == "__main__":
    sys.exit(main())
