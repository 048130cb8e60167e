#!/usr/bin/env bash
# Deploys SibylFeed and one SibylAggregatorV3 adapter per feed with cast (used by
# `sibyl devnet --chain` against a local anvil, and by scripts/test.d/21-contracts-anvil).
#
#   contracts/script/deploy.sh --rpc-url http://127.0.0.1:8545 --private-key 0x... \
#       --config-digest 0x<32 bytes> --group-key-x 0x<32 bytes> --group-key-y 0x<32 bytes> \
#       --feed BTC-USD:8 [--feed ETH-USD:8 ...] [--max-drift-ms 5000] [--description-suffix " / Sibyl"]
#
# The group key is the committee's FROST(secp256k1, Keccak-256) key as affine x, y.
# Prints one JSON object on stdout:
#   {"chainId":31337,"feed":"0x...","adapters":{"BTC-USD":"0x...",...},"gasUsed":{...}}
# Everything else goes to stderr. Exits non-zero with a message on any failure.
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
forge="$here/tools/forge"
cast="$here/tools/cast"

die() { echo "deploy.sh: $*" >&2; exit 2; }

rpc="" key="" digest="" gx="" gy="" drift=5000 suffix=" / Sibyl"
feeds=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rpc-url) rpc=${2:?}; shift 2 ;;
    --private-key) key=${2:?}; shift 2 ;;
    --config-digest) digest=${2:?}; shift 2 ;;
    --group-key-x) gx=${2:?}; shift 2 ;;
    --group-key-y) gy=${2:?}; shift 2 ;;
    --feed) feeds+=("${2:?}"); shift 2 ;;
    --max-drift-ms) drift=${2:?}; shift 2 ;;
    --description-suffix) suffix=${2?}; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ -n "$rpc" ] || die "--rpc-url is required"
[ -n "$key" ] || die "--private-key is required (anvil prints funded dev keys at start-up)"
[[ "$digest" =~ ^0x[0-9a-fA-F]{64}$ ]] || die "--config-digest must be 0x and 64 hex digits"
[[ "$gx" =~ ^0x[0-9a-fA-F]{1,64}$ ]] || die "--group-key-x must be 0x-prefixed hex"
[[ "$gy" =~ ^0x[0-9a-fA-F]{1,64}$ ]] || die "--group-key-y must be 0x-prefixed hex"
[ ${#feeds[@]} -gt 0 ] || die "give at least one --feed ID:DECIMALS"

# Build once (cached; compiles only when sources changed).
(cd "$here" && "$forge" build >&2)

bytecode() { # contract name -> creation bytecode from forge's artifact
  node -e 'const a=require(process.argv[1]); process.stdout.write(a.bytecode.object)' \
    "$here/out/$1.sol/$1.json"
}

deploy() { # creation code hex -> address; appends gas to $gas_json
  local receipt
  receipt=$("$cast" send --rpc-url "$rpc" --private-key "$key" --json --create "$1") \
    || die "deploying $2 failed (is the node at $rpc up, and the key funded?)"
  node -e '
    const r = JSON.parse(process.argv[1]);
    if (r.status !== "0x1" && r.status !== 1 && r.status !== "1") { console.error("status", r.status); process.exit(1); }
    process.stdout.write(r.contractAddress + " " + parseInt(r.gasUsed));' "$receipt" \
    || die "deploying $2 reverted"
}

# The feed registry (each feed's decimals) is set at deployment and changes only with a
# committee-signed rotation.
ids=() decs=()
for spec in "${feeds[@]}"; do
  id=${spec%%:*} decimals=${spec#*:}
  [[ "$id" =~ ^[A-Z0-9._-]{1,32}$ ]] || die "feed id '$id' must be 1..32 of [A-Z0-9-_.]"
  [[ "$decimals" =~ ^[0-9]+$ && "$spec" == *:* ]] || die "--feed '$spec' must be ID:DECIMALS"
  [ "$decimals" -le 18 ] || die "--feed '$spec': at most 18 decimals fit the stored values"
  ids+=("$("$cast" format-bytes32-string "$id")") decs+=("$decimals")
done
join() { local IFS=,; echo "[$*]"; }
args=$("$cast" abi-encode "constructor(bytes32,uint256,uint256,uint64,bytes32[],uint8[])" \
  "$digest" "$gx" "$gy" "$drift" "$(join "${ids[@]}")" "$(join "${decs[@]}")")
out=$(deploy "$(bytecode SibylFeed)${args#0x}" SibylFeed) || exit 2
feed_addr=${out% *} feed_gas=${out#* }
echo "SibylFeed at $feed_addr ($feed_gas gas)" >&2

adapter_code=$(bytecode SibylAggregatorV3)
adapters="" gas="\"SibylFeed\":$feed_gas"
for spec in "${feeds[@]}"; do
  id=${spec%%:*}
  id32=$("$cast" format-bytes32-string "$id")
  args=$("$cast" abi-encode "constructor(address,bytes32,string)" \
    "$feed_addr" "$id32" "$id$suffix")
  out=$(deploy "$adapter_code${args#0x}" "adapter $id") || exit 2
  addr=${out% *} g=${out#* }
  echo "SibylAggregatorV3 for $id at $addr ($g gas)" >&2
  adapters+="${adapters:+,}\"$id\":\"$addr\""
  gas+=",\"adapter:$id\":$g"
done
chain=$("$cast" chain-id --rpc-url "$rpc")
printf '{"chainId":%s,"feed":"%s","adapters":{%s},"gasUsed":{%s}}\n' \
  "$chain" "$feed_addr" "$adapters" "$gas"
