.PHONY: setup test bench
# The README's commands. Each script also runs without make.
setup:
	scripts/setup.sh
test:
	scripts/test.sh
bench:
	scripts/bench.sh
