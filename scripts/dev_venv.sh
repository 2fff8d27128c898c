# Sourced by the scripts that run the suite in a venv of their own (sanitize.sh,
# valgrind.sh): `dev_venv VENV PYTHON` makes VENV from PYTHON if missing and installs
# the suite's own requirements into it, again whenever requirements-dev.txt changes,
# so no test skips there for a missing package.
dev_venv() {
    local venv=$1 python=$2
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    local stamp
    stamp="$venv/.installed-$(sha1sum requirements-dev.txt | cut -c1-12)"
    if [ ! -e "$stamp" ]; then
        "$venv/bin/python" -m pip install -q --upgrade pip
        "$venv/bin/python" -m pip install -q -r requirements-dev.txt
        rm -f "$venv"/.installed* && touch "$stamp"
    fi
}
