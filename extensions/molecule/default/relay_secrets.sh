#!/bin/sh
# The lab relay's secrets, made on the VM by smtp_relay.yml (run once: the VM is thrown away):
# a throwaway CA, the relay's certificate for localhost signed by it, and the SASL user.
#
#   RELAY_PASSWORD=... relay_secrets.sh CA_BUNDLE CERT KEY SASLDB USER@REALM
#
# Each file is written in its final directory, so that it gets that directory's SELinux
# type (cert_t in /etc/ssl/certs, postfix_etc_t in /etc/postfix) without a relabel. The
# CA's key lives only in a temporary directory.
set -eu
ca_bundle=$1 cert=$2 key=$3 sasldb=$4 login=$5
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=audit-mail-alert lab relay CA" -keyout "$work/ca.key" -out "$ca_bundle" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
(umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -keyout "$key" -out "$cert" -CA "$ca_bundle" -CAkey "$work/ca.key" \
  -addext basicConstraints=critical,CA:FALSE -addext subjectAltName=DNS:localhost \
  -addext keyUsage=critical,digitalSignature -addext extendedKeyUsage=serverAuth)
chmod 644 "$cert"
mkdir -p "$(dirname "$sasldb")"
printf '%s\n' "$RELAY_PASSWORD" | saslpasswd2 -p -c -f "$sasldb" -u "${login#*@}" "${login%@*}"
chown root:postfix "$sasldb"
chmod 640 "$sasldb"
