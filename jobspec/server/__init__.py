"""The local tuning service: the Gemini API's tuning surface, served on this machine.

It is a separate process with its own state. jobspec's CLI reaches it only over HTTP, exactly as it
reaches Google, so nothing here imports the reconciler, the job-file loader or the reports.

    app.py        HTTP routes, auth, request logging (Starlette)
    guard.py      which requests are answered: Host, Origin, Content-Type (web pages kept out)
    protojson.py  the Gemini API's JSON (proto3 JSON): parsing requests, rendering resources,
                  error envelope
    service.py    what each method does
    validation.py what a create or generateContent request may ask for
    tokens.py     examples measured in tokens at create time (tokenizers only, no weights)
    counting.py   countTokens and countExampleTokens: counts as training and serving take them
    chat.py       prompts and examples to token ids, the same way for training and serving
    handshake.py  proving to jobspec that this is the service it started (HMAC of a challenge;
                  the handshake itself is jobspec/wire.py's)
    store.py      SQLite state, the API's side (storedb.py: schema and records; storeruns.py:
                  a run's life from claim to end, who owns a job)
    recipe.py     what the service decides about training (layout, LoRA, schedule, precision),
                  each choice measured by bench/tuning_quality.py
    trainer.py    LoRA fine-tuning of one job: batches, micro-batches, the step loop,
                  validation loss at each epoch's end
    losses.py     what a batch costs: padding, the summed loss, the validation mean
    training_state.py where a run stands (step, validation losses, early stopping, adapter,
                  optimiser, RNG) as one value: resume (the one decision) and snapshot
    checkpoints.py training checkpoints on disk (atomic, owner-checked), so a run resumes mid-run
    worker.py     the training worker process: queued jobs, one after another
    supervisor.py keeping the worker processes alive; failing the queue when none can start
    adapters.py   tuned adapters on disk, one folder per operation
    inference.py  generation on base models and tuned adapters, with an adapter cache
    models.py     base model discovery (the SmolLM2 GGUF), aliases, loading
    main.py       `jobspec serve`: arguments, start-up, signals

With `--ray ADDRESS` (the extra jobspec[ray]; nothing below is imported without it):

    rayserve.py   the Ray flags, their checks, what the service builds from them
    rayconnect.py joining the cluster (bounded, a clear error), the service's namespace
    raydispatch.py following each job's Ray Train run from the service, applying its reports
    rayrun.py     the detached actor that holds one run and collects its reports
    raytrain.py   what runs on Ray Train's workers (train_loop) and the trainer that runs it
    raystandby.py a run started ahead of the next job while the service is idle
    raystorage.py --storage: examples, Ray Train's checkpoints, adapters, for every node
    raygenerate.py generation on a GPU node of the cluster, in an actor, when there is one
    data_parallel.py a job's examples shared among data-parallel workers (torch DDP)
"""
