"""infer: model input slot -> validated model outputs, through ONNX Runtime.

One I/O binding per tensor-pool slot, made at setup: a frame is one
`run_with_iobinding` on memory the preprocess stage already wrote. Outputs with NaN or
Inf are never passed on as values: the result says NONFINITE and control fails safe.
"""

from __future__ import annotations

import os
import time

import numpy as np

from edgert.runtime import wire
from edgert.runtime.camhealth import status_for
from edgert.runtime.engine import Engine
from edgert.runtime.frameinput import FrameInput
from edgert.runtime.node import Node
from edgert.runtime.profiles import resolve
from edgert.runtime.signing import approved_manifest
from edgert.runtime.topics import TENSOR_STREAM, layout
from edgert.runtime.transport import publisher
from edgert.runtime.wire import MAX_VALUES, MsgType, ResultStatus, Stamp


class InferStage(Node):
    name = "infer"

    def setup(self) -> None:
        icfg = self.cfg.infer
        # signed, unaltered, approved for pipeline.market, and the one the supervisor pinned at start
        manifest = approved_manifest(self.cfg, pin=self.ctx.manifest_sha256)
        cache = self.cfg.cache_dir()
        profile = resolve(icfg.profile, cache, cuda_graph=icfg.cuda_graph)
        providers = icfg.providers if icfg.providers != ["auto"] else list(profile.providers)
        # 0 threads = one per core this stage is pinned to (pipeline.affinity), so it never oversubscribes
        threads = icfg.intra_op_threads or len(os.sched_getaffinity(0))
        self.engine = Engine(manifest, providers=providers, intra_op_threads=threads,
                             provider_options=profile.provider_options, cache_dir=cache)
        spec = manifest.inputs[0]
        self.input = FrameInput.of(self, TENSOR_STREAM, layout(TENSOR_STREAM, self.cfg, spec))
        pool = self.input.pool
        self.slots = [pool.view(s, self.input.shape, self.input.dtype) for s in range(pool.n_slots)]
        self.input_name = spec.name
        # Each tensor-pool slot is bound in place; on a GPU, ONNX Runtime copies it to the device inside
        # the run. A CUDA graph replays fixed device addresses, so then the tensors live on the device
        # and a frame is one copy into the bound input. Measured on an H200 (docs/benchmarks.md, "On a
        # GPU"): graph 0.196 ms p50, slot binding 0.226 ms, device tensors without a graph 0.383 ms (the
        # Python-side copies cost more than ORT's own), so device tensors are used only with a graph.
        self.device_io = self.engine.bind_device() if self.engine.cuda_graph else None
        self.bindings = ([] if self.device_io else
                         [self.engine.bind({spec.name: view}) for view in self.slots])
        if self.device_io:  # warm up on the binding the frames use: its first run captures the CUDA graph
            for _ in range(max(icfg.warmup_runs, 2)):
                self.device_io.run()
            self.engine.seal_caches()  # TensorRT engines built in the warm-up, sealed for the next start
        else:
            self.engine.warmup(icfg.warmup_runs)  # seals them itself
        self.output = self.engine.outputs[manifest.decoder.output].reshape(-1)
        self.values = self.output[:MAX_VALUES]
        self.pub = self.own(publisher(self.ctx.zmq, self.ctx.endpoints, "results"))
        self.res = wire.new_message(MsgType.RESULT)
        self.res["n_values"] = len(self.values)
        self.nonfinite = 0

    def _run_model(self, slot: int) -> None:
        if self.device_io:
            self.device_io.run()
        else:
            self.engine.run(self.bindings[slot])

    def step(self) -> None:
        got = self.input.next(100)
        if got is None:
            return
        rec, _ = got
        t_recv = time.monotonic_ns()
        if self.device_io:
            self.device_io.load(self.input_name, self.slots[int(rec["slot"])])
        self._run_model(int(rec["slot"]))
        if not self.input.still_valid(rec):
            return
        r = self.res
        camera = int(rec["flags"])  # preprocess's camera-health verdict (runtime/camhealth.py)
        if camera:  # a black, frozen or out-of-domain image: whatever the model made of it is not passed on
            r["status"] = status_for(camera)
            r["values"][:] = 0.0
        elif np.isfinite(self.output).all():
            r["status"] = ResultStatus.OK
            r["values"][: len(self.values)] = self.values
        else:
            self.nonfinite += 1
            r["status"] = ResultStatus.NONFINITE
            r["values"][:] = 0.0
        r["frame_id"] = rec["frame_id"]
        r["stamps"][:] = rec["stamps"]
        r["stamps"][Stamp.INFER_RECV] = t_recv
        r["stamps"][Stamp.INFER_DONE] = time.monotonic_ns()
        self.pub.send(wire.encode(r))
        self.frames += 1
