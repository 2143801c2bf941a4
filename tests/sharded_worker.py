"""Run in a subprocess with 8 fake CPU devices: train the same steps on several meshes and print
the losses as JSON (``python -m tests.sharded_worker OUT_DIR``); the ``*_pallas`` runs train with the
Pallas flash-attention kernel (attention dropout inside it, interpreted on CPU)."""
import dataclasses
import json
import sys

import jax
import numpy as np

from dynaguide_jax.data.episodes import EpisodeData
from dynaguide_jax.data.windows import DynamicsWindows
from dynaguide_jax.dynamics import DynamicsConfig
from dynaguide_jax.training import DynamicsTrainConfig, make_mesh, train_dynamics


def windows(frames=120, p=16, d=64):
    rng = np.random.default_rng(0)
    data = EpisodeData(obs={"proprio": rng.normal(size=(frames, 15)).astype(np.float32)},
                       actions=rng.normal(size=(frames, 7)).astype(np.float32),
                       episode_ends=np.array([40, 80, 120]))
    return DynamicsWindows(data, rng.normal(size=(frames, p, d)).astype(np.float32), horizon=16)


def main(out):
    cfg = DynamicsConfig.preset("small").replace(dropout=0.1)
    w = windows()
    tc = DynamicsTrainConfig(steps=4, global_batch=8, learning_rate=1e-3, log_every=1, checkpoint_every=4,
                             async_checkpoints=False)
    devs = jax.devices()
    result = {"devices": len(devs)}
    pallas = dataclasses.replace(tc, attention="pallas")
    for name, mesh, train_cfg in (("one", make_mesh(1, devs[:1]), tc), ("dp8", make_mesh(1, devs), tc),
                                  ("fsdp4x2", make_mesh(2, devs), tc), ("one_pallas", make_mesh(1, devs[:1]), pallas),
                                  ("dp8_pallas", make_mesh(1, devs), pallas),
                                  ("fsdp4x2_pallas", make_mesh(2, devs), pallas)):
        r = train_dynamics(cfg, lambda s, rows: w.batch(s, 8, 0, rows), train_cfg, f"{out}/{name}", mesh=mesh,
                           progress=False)
        result[name] = [loss for _, loss in r.losses]
        leaf = r.params["layers_0"]["linear1"]["kernel"]
        result[name + "_sharding"] = str(leaf.sharding.spec)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
