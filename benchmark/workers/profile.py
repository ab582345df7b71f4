"""Kind `profile`: matmul FLOP/s, and the forward / backward / clip / optimizer split of both contenders' steps."""

from __future__ import annotations


from benchmark.common import CellSize, Spans, training_batches
from benchmark.workers.shared import paths_of, setup_threads, student_seed


def w_profile(spec, spans: Spans) -> dict:
    """Step-level timing of both contenders and a matmul reference, in one process.

    ours: mkd.training.loop.fit's step (same student, optimizer, param groups, schedule, clipping, loss, batches);
    baseline: the Trainer baseline's step (teacher forward, student forward/backward at 128 tokens, clipping, a
    fused AdamW with the recipe's groups over the full vocabulary).
    """
    with spans("imports"):
        import torch
        import torch.nn.functional as F
        from torch.utils.flop_counter import FlopCounterMode
        from transformers import AutoModelForSequenceClassification

        from mkd.models import heads
        from mkd.pipeline.encoder import Encoder
        from mkd.models.features import pad_batch
        from mkd.training.losses import objective_for
        from mkd.models.sources import count_parameters
        from mkd.models.students import layer_map, make_student
        from mkd.training.loop import batch_loss, configure_optimizer, linear_schedule, train_config
    threads = setup_threads(spec)
    size = CellSize(**spec["size"])
    params, paths = spec["params"], paths_of(spec)
    s = params["student"]
    out: dict = {"threads": threads}

    # ---- the matmul reference
    n = int(spec.get("matmul_n", 2048))
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.matmul(a, b)
    for _ in range(int(spec.get("matmul_reps", 10))):
        with spans("matmul"):
            torch.matmul(a, b)
    out["matmul_n"] = n
    del a, b

    # ---- ours: the student step exactly as fit takes it
    enc = Encoder(params, paths)
    examples, train = enc.train(size.language_set, size.resource)
    cached = torch.load(paths.logits / f"{size.language_set}-{size.resource}.pt", weights_only=False)
    row = {k: i for i, k in enumerate(map(tuple, cached["keys"]))}
    teacher_logits = cached["logits"][[row[(e.locale, e.id)] for e in examples]]
    teacher_dir = paths.teachers / "shared"
    mapping = layer_map(s["layer_map"], 12, s["layers"])
    seed = student_seed(size)

    def new_student(base, tdir):
        return make_student("teacher", base_dir=base, teacher_dir=tdir, mapping=mapping,
                            num_labels=len(enc.data.labels), seed=seed)

    objective = objective_for(s, "on")
    cfg = train_config(s, objective, seed)  # exactly the config run_cell gives fit
    student = new_student(paths.base, teacher_dir)
    counts = count_parameters(student)
    out["ours_params"] = counts
    out["ours_vocab"] = student.config.vocab_size
    optimizer = configure_optimizer(student, cfg, "cpu")  # fit's own optimizer and schedule
    scheduler = linear_schedule(optimizer, cfg, cfg.max_steps)
    n_warm, n_steps = 2, int(spec.get("steps", 20))
    batches = training_batches([len(x) for x in train.ids], s["batch_size"], seed, n_warm + n_steps)
    student.train()
    steps = []
    for k, batch in enumerate(batches):
        timed = k >= n_warm
        ids, mask = pad_batch([train.ids[i] for i in batch], enc.pad_id)
        index = torch.as_tensor(batch)

        def loss_of(model):  # fit's own batch loss
            return batch_loss(model, ids, mask, train.labels[index], cfg.objective, loss_options=cfg.loss_options,
                              teacher_logits=teacher_logits[index])[0]

        rec = {"batch": len(batch), "width": int(ids.shape[1]), "real_tokens": int(mask.sum())}
        if timed:  # FLOPs of this very step, counted in a separate untimed pass
            with FlopCounterMode(display=False) as fc:
                loss_of(student).backward()
            rec["counted_flops"] = int(fc.get_total_flops())
            optimizer.zero_grad(set_to_none=True)
        pre = "ours." if timed else "warm."
        with spans(pre + "batch"):
            ids, mask = pad_batch([train.ids[i] for i in batch], enc.pad_id)
            index = torch.as_tensor(batch)
        with spans(pre + "forward"):
            loss = loss_of(student)
        with spans(pre + "backward"):
            loss.backward()
        with spans(pre + "clip"):
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        with spans(pre + "optimizer"):
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            float(loss.detach())
        if timed:
            steps.append(rec)
    out["ours_steps"] = steps

    # why fit uses the fused kernel: torch's default CPU AdamW (a per-tensor for-loop) over the embedding table
    # alone vs the rest, against the fused and foreach implementations over everything
    loss_of(student).backward()
    emb = student.get_input_embeddings().weight
    rest = [p for p in student.parameters() if p is not emb]
    for label, opt in (("opt.embedding_only", torch.optim.AdamW([emb], lr=1e-5)),
                       ("opt.rest_only", torch.optim.AdamW(rest, lr=1e-5)),
                       ("opt.fused_all", torch.optim.AdamW(student.parameters(), lr=1e-5, fused=True)),
                       ("opt.foreach_all", torch.optim.AdamW(student.parameters(), lr=1e-5, foreach=True))):
        opt.step()  # first step allocates the state
        for _ in range(5):
            with spans(label):
                opt.step()
    out["embedding_params"] = emb.numel()
    del optimizer, scheduler, student

    # ---- baseline: the Trainer baseline's step, full vocabulary, padded to 128
    if int(spec.get("baseline_steps", 3)) > 0:
        e5, tfull = spec["e5_dir"], spec["teacher_full_dir"]
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(e5)
        teacher = AutoModelForSequenceClassification.from_pretrained(tfull).eval()
        bstudent = new_student(e5, tfull)
        out["baseline_params"] = count_parameters(bstudent)
        bopt = configure_optimizer(bstudent, cfg, "cpu")  # the recipe's groups, as the baseline's create_optimizer
        bstudent.train()
        bsteps = []
        gen = torch.Generator().manual_seed(seed)
        for k in range(1 + int(spec.get("baseline_steps", 3))):
            pick = torch.randperm(len(examples), generator=gen)[: s["batch_size"]].tolist()
            x = tok([examples[i].utt for i in pick], padding="max_length", truncation=True, max_length=128, return_tensors="pt")
            labels = train.labels[torch.as_tensor(pick)]
            timed = k >= 1
            pre = "base." if timed else "warm."
            rec = {"batch": len(pick), "width": 128, "real_tokens": int(x["attention_mask"].sum())}
            if timed and k == 1:
                with FlopCounterMode(display=False) as fc:
                    with torch.no_grad():
                        t = heads.forward(teacher, x["input_ids"], x["attention_mask"]).logits
                    o = heads.forward(bstudent, x["input_ids"], x["attention_mask"]).logits
                    (0.5 * F.cross_entropy(o, labels) + 0.5 * F.mse_loss(o, t)).backward()
                rec["counted_flops"] = int(fc.get_total_flops())
                bopt.zero_grad(set_to_none=True)
            with spans(pre + "teacher"):
                with torch.no_grad():
                    t = heads.forward(teacher, x["input_ids"], x["attention_mask"]).logits
            with spans(pre + "forward"):
                o = heads.forward(bstudent, x["input_ids"], x["attention_mask"]).logits
                loss = 0.5 * F.cross_entropy(o, labels) + 0.5 * F.mse_loss(o, t)
            with spans(pre + "backward"):
                loss.backward()
            with spans(pre + "clip"):
                torch.nn.utils.clip_grad_norm_(bstudent.parameters(), 1.0)
            with spans(pre + "optimizer"):
                bopt.step()
                bopt.zero_grad(set_to_none=True)
            if timed:
                bsteps.append(rec)
        out["baseline_steps"] = bsteps
    return out
