"""A throwaway public key infrastructure for the TLS tests, made with the openssl CLI: the
plugin's smtp_ca_file names the trusted CA, the test servers present its certificates."""

import subprocess


class PKI:
    """A throwaway CA that smtp_ca_file trusts, a rogue CA nobody trusts, and server
    certificates (PEM files in one directory), made with the openssl CLI."""

    def __init__(self, directory):
        self.dir = directory
        self.serial = 0
        self.ca = self._ca("trusted-ca")
        self.rogue_ca = self._ca("rogue-ca")
        self.localhost = self._server("localhost", self.ca, "DNS:localhost,IP:127.0.0.1")
        self.other_name = self._server("other-name", self.ca, "DNS:mail.example.net")
        self.rogue_localhost = self._server("rogue-localhost", self.rogue_ca,
                                            "DNS:localhost,IP:127.0.0.1")
        self.crl_only = self._crl()

    def openssl(self, *args):
        result = subprocess.run(["openssl", *[str(a) for a in args]], cwd=self.dir,
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"openssl {' '.join(map(str, args))}: {result.stderr}"

    def _key_args(self, name):
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", self.dir / f"{name}.key"]

    def _ca(self, name):
        self.openssl("req", "-x509", *self._key_args(name), "-out", self.dir / f"{name}.pem",
                     "-days", "2", "-subj", f"/CN=audisp-mailalert test {name}",
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"

    def _server(self, name, ca, san):
        self.openssl("req", "-new", *self._key_args(name), "-out", self.dir / f"{name}.csr",
                     "-subj", f"/CN={san.split(',')[0].split(':')[1]}")
        extensions = self.dir / f"{name}.ext"
        extensions.write_text(f"subjectAltName = {san}\nbasicConstraints = critical,CA:FALSE\n"
                              "keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n")
        self.serial += 1
        self.openssl("x509", "-req", "-in", self.dir / f"{name}.csr", "-CA", ca[0], "-CAkey", ca[1],
                     "-set_serial", self.serial, "-days", "2", "-extfile", extensions,
                     "-out", self.dir / f"{name}.pem")
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"

    def _crl(self):
        """A PEM file holding a CRL of the trusted CA and no certificate."""
        (self.dir / "index.txt").write_text("")
        (self.dir / "crlnumber").write_text("01\n")
        (self.dir / "ca.cnf").write_text(
            "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\ncrlnumber = crlnumber\n"
            "default_md = sha256\ndefault_crl_days = 1\n")
        self.openssl("ca", "-gencrl", "-config", "ca.cnf", "-cert", self.ca[0], "-keyfile", self.ca[1],
                     "-out", self.dir / "crl.pem")
        return self.dir / "crl.pem"
