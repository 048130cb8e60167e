#!/bin/sh
# One-shot setup of the compose committee: 4 members, threshold 3, trusted-
# dealer keys (a demo committee; a real one runs `sibyl dkg`), configs that
# address the other members by their fixed IPs on the compose network, and sources that
# observe the compose file's simulated exchange.
#   setup.sh [STATE_DIR] [SIM_EXCHANGE_URL] [SUBNET] [SOURCES_TEMPLATE]
# Member i listens on SUBNET.1i (compose.yml gives it that address; default subnet
# 172.28.0): the libp2p build has no DNS transport, so /dns addresses cannot be dialed.
# Idempotent: does nothing when STATE_DIR/committee.toml exists.
set -eu
state=${1:-/state}
sim=${2:-http://sim-exchange:9100}
subnet=${3:-172.28.0}
template=${4:-/usr/share/sibyl/sources.sim.toml}
sibyl=${SIBYL:-sibyl}

if [ -f "$state/committee.toml" ]; then
  echo "$state/committee.toml exists; keeping the committee"
  exit 0
fi
mkdir -p "$state"
"$sibyl" keygen --dealer --nodes 4 --threshold 3 --out "$state" >/dev/null

peer_id() {
  sed -n "/\"index\": $1,/{n;s/.*\"peer_id\": \"\([^\"]*\)\".*/\1/p;}" "$state/keygen.json"
}

{
  echo 'threshold = 3'
  echo 'suites = ["ed25519"]'
  for i in 1 2 3 4; do
    printf '\n[[members]]\nindex = %s\npeer_id = "%s"\naddress = "/ip4/%s.1%s/tcp/9000"\n' \
      "$i" "$(peer_id "$i")" "$subnet" "$i"
  done
  for feed in BTC-USD ETH-USD; do
    printf '\n[[feeds]]\nid = "%s"\ndecimals = 8\ndeviation_bps = 50\nheartbeat = "60s"\n' "$feed"
  done
} >"$state/committee.toml"

# Bind the FROST keys to this committee's config digest (identities are kept).
"$sibyl" keygen --dealer --nodes 4 --threshold 3 --out "$state" \
  --committee "$state/committee.toml" >/dev/null

for i in 1 2 3 4; do
  cat >"$state/node-$i/node.toml" <<TOML
[node]
committee = "../committee.toml"
# The member's own volume (compose.yml); keys and configs stay in the shared state volume.
data_dir = "/var/lib/sibyl"

[keys]
identity = "identity.key"
key_package = "frost.key"
public_key_package = "frost.pub.json"
passphrase_file = "passphrase"

[net]
listen = "/ip4/0.0.0.0/tcp/9000"

[api]
listen = "0.0.0.0:8080"

[log]
format = "json"

[sources]
TOML
  # The sources template, its tables moved under [sources], pointed at the
  # compose file's simulated exchange.
  sed -e "s#http://127.0.0.1:9100#$sim#g" \
      -e "s#ws://127.0.0.1:9100#$(echo "$sim" | sed 's#^http#ws#')#g" \
      -e 's/^\[venues\./[sources.venues./' \
      -e 's/^\[\[feeds\]\]/[[sources.feeds]]/' \
      "$template" >>"$state/node-$i/node.toml"
  "$sibyl" config check --config "$state/node-$i/node.toml" >/dev/null
done
echo "committee of 4 written to $state (config check passed for every member)"
