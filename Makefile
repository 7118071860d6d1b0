.PHONY: run stop test test-chaos images lint bench clean-containers

run:
	@scripts/run

# Stops the make run of this folder (from another terminal).
stop:
	@scripts/supervise stop

test:
	@scripts/test

# Kills Lattice's processes at random while people use it: make test-chaos ARGS='--chaos-seed 7'
test-chaos:
	@scripts/test-chaos $(ARGS)

images:
	@scripts/build-images $(IMAGES)

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

bench:
	.venv/bin/python bench/spawn.py
	.venv/bin/python bench/broadcast.py
	.venv/bin/python bench/reconcile.py

# Removes every container and network Lattice started; data volumes are kept.
clean-containers:
	.venv/bin/python manage.py shell -c "from workspaces.lib.engine_access import backend; b = backend(); [b.remove(w) for w in b.list_workspaces()]"
