"""Version knowledge: the comparator schemes, recognising real banners, and the shipped data file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from scanner.errors import InputError
from scanner.versiondata import load_version_data, packaged_data_path
from scanner.versiondata.identify import identification_facts, identify_service
from scanner.versiondata.schemes import VersionParseError, scheme_for

DATA = load_version_data()

# (how it reaches us, text) → (product id, upstream version, evidence, distro, distro release)
# "banner" is a raw banner; "nmap" is nmap -sV's "product|version|extrainfo"; "cpe" is a CPE nmap reported.
BANNERS: list[tuple[str, str, str | None, str | None, str, str | None, str | None]] = [
    ("banner", "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6", "openssh", "8.9p1", "distribution_banner", "ubuntu", "22.04"),
    ("banner", "SSH-2.0-OpenSSH_7.4p1 Debian-10+deb9u7", "openssh", "7.4p1", "distribution_banner", "debian", "9"),
    ("banner", "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", "openssh", "9.2p1", "distribution_banner", "debian", "12"),
    ("banner", "SSH-2.0-OpenSSH_8.4p1 Debian-5+deb11u3", "openssh", "8.4p1", "distribution_banner", "debian", "11"),
    ("banner", "SSH-2.0-OpenSSH_7.9p1 Debian-10+deb10u2", "openssh", "7.9p1", "distribution_banner", "debian", "10"),
    (
        "banner",
        "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5",
        "openssh",
        "9.6p1",
        "distribution_banner",
        "ubuntu",
        "24.04",
    ),
    (
        "banner",
        "SSH-2.0-OpenSSH_8.2p1 Ubuntu-4ubuntu0.11",
        "openssh",
        "8.2p1",
        "distribution_banner",
        "ubuntu",
        "20.04",
    ),
    ("banner", "SSH-2.0-OpenSSH_7.6p1 Ubuntu-4ubuntu0.7", "openssh", "7.6p1", "distribution_banner", "ubuntu", "18.04"),
    (
        "banner",
        "SSH-2.0-OpenSSH_7.2p2 Ubuntu-4ubuntu2.10",
        "openssh",
        "7.2p2",
        "distribution_banner",
        "ubuntu",
        "16.04",
    ),
    ("banner", "SSH-2.0-OpenSSH_7.4", "openssh", "7.4", "bare_upstream_banner", None, None),
    ("banner", "SSH-2.0-OpenSSH_9.6", "openssh", "9.6", "bare_upstream_banner", None, None),
    ("banner", "SSH-2.0-OpenSSH_9.8p1", "openssh", "9.8p1", "bare_upstream_banner", None, None),
    ("banner", "SSH-1.99-OpenSSH_5.3", "openssh", "5.3", "bare_upstream_banner", None, None),
    ("banner", "SSH-2.0-OpenSSH_7.4p1 Raspbian-10+deb9u7", "openssh", "7.4p1", "distribution_banner", "debian", "9"),
    ("banner", "SSH-2.0-OpenSSH_8.0", "openssh", "8.0", "bare_upstream_banner", None, None),
    ("banner", "SSH-2.0-OpenSSH_7.4p1 FreeBSD-20170903", "openssh", "7.4p1", "distribution_banner", "freebsd", None),
    (
        "nmap",
        "OpenSSH|8.9p1 Ubuntu 3ubuntu0.6|Ubuntu Linux; protocol 2.0",
        "openssh",
        "8.9p1",
        "distribution_banner",
        "ubuntu",
        "22.04",
    ),
    ("nmap", "OpenSSH|7.4p1 Debian 10+deb9u7|protocol 2.0", "openssh", "7.4p1", "distribution_banner", "debian", "9"),
    ("nmap", "OpenSSH|7.4|protocol 2.0", "openssh", "7.4", "bare_upstream_banner", None, None),
    ("nmap", "OpenSSH|7.4|protocol 2.0", "openssh", "7.4", "bare_upstream_banner", None, None),
    ("banner", "Server: nginx/1.18.0 (Ubuntu)", "nginx", "1.18.0", "distribution_banner", "ubuntu", None),
    ("banner", "Server: nginx/1.22.1", "nginx", "1.22.1", "bare_upstream_banner", None, None),
    ("banner", "nginx/1.28.2", "nginx", "1.28.2", "bare_upstream_banner", None, None),
    ("nmap", "nginx|1.24.0|Ubuntu", "nginx", "1.24.0", "distribution_banner", "ubuntu", None),
    ("nmap", "nginx|1.14.2||", "nginx", "1.14.2", "bare_upstream_banner", None, None),
    ("banner", "Server: Apache/2.4.57 (Debian)", "apache-httpd", "2.4.57", "distribution_banner", "debian", None),
    ("banner", "Server: Apache/2.4.52 (Ubuntu)", "apache-httpd", "2.4.52", "distribution_banner", "ubuntu", None),
    (
        "banner",
        "Apache/2.4.6 (CentOS) OpenSSL/1.0.2k-fips",
        "apache-httpd",
        "2.4.6",
        "distribution_banner",
        "rhel",
        None,
    ),
    (
        "banner",
        "Apache/2.4.37 (Red Hat Enterprise Linux)",
        "apache-httpd",
        "2.4.37",
        "distribution_banner",
        "rhel",
        None,
    ),
    ("banner", "Apache/2.4.49 (Unix)", "apache-httpd", "2.4.49", "bare_upstream_banner", None, None),
    ("banner", "Apache/2.2.15 (CentOS)", "apache-httpd", "2.2.15", "distribution_banner", "rhel", None),
    ("banner", "Apache/2.4.62 (Win64) OpenSSL/3.1.3", "apache-httpd", "2.4.62", "bare_upstream_banner", None, None),
    ("nmap", "Apache httpd|2.4.57|(Debian)", "apache-httpd", "2.4.57", "distribution_banner", "debian", None),
    ("nmap", "Apache httpd|2.4.41|(Ubuntu)", "apache-httpd", "2.4.41", "distribution_banner", "ubuntu", None),
    ("banner", "Microsoft-IIS/10.0", "iis", "10.0", "bare_upstream_banner", None, None),
    ("banner", "Microsoft-IIS/8.5", "iis", "8.5", "bare_upstream_banner", None, None),
    ("nmap", "Microsoft IIS httpd|7.5|", "iis", "7.5", "bare_upstream_banner", None, None),
    ("banner", "Apache-Coyote/1.1 Apache Tomcat/9.0.65", "tomcat", "9.0.65", "bare_upstream_banner", None, None),
    ("nmap", "Apache Tomcat|8.5.100|", "tomcat", "8.5.100", "bare_upstream_banner", None, None),
    ("nmap", "MySQL|5.7.33-0ubuntu0.18.04.1|", "mysql", "5.7.33", "distribution_banner", "ubuntu", "18.04"),
    ("nmap", "MySQL|8.0.36|", "mysql", "8.0.36", "bare_upstream_banner", None, None),
    ("nmap", "MariaDB|10.3.39-MariaDB-0+deb10u1|", "mariadb", "10.3.39", "distribution_banner", "debian", "10"),
    ("nmap", "PostgreSQL DB|9.6.0 - 9.6.7|", "postgresql", None, "none", None, None),
    ("nmap", "Samba smbd|4.6.2|", "samba", "4.6.2", "bare_upstream_banner", None, None),
    (
        "nmap",
        "Microsoft SQL Server 2019|15.00.4153.00; RTM+|",
        "mssql",
        "15.00.4153.00",
        "bare_upstream_banner",
        None,
        None,
    ),
    ("banner", "X-Powered-By: PHP/7.4.3", "php", "7.4.3", "bare_upstream_banner", None, None),
    ("banner", "PHP/8.1.2-1ubuntu2.18", "php", "8.1.2", "distribution_banner", "ubuntu", None),
    # Java / OpenJDK: java -version / JMX "build" lines, HttpURLConnection user agents, Payara/GlassFish
    # X-Powered-By, and the CPEs nmap and NVD use.
    ("banner", "User-Agent: Java/1.8.0_292", "openjdk", "1.8.0_292", "bare_upstream_banner", None, None),
    ("banner", "User-Agent: Java/17.0.2", "openjdk", "17.0.2", "bare_upstream_banner", None, None),
    (
        "banner",
        "X-Powered-By: Servlet/3.1 JSP/2.3 (Payara Server  5.2022.5 #badassfish Java/Azul Systems, Inc./11.0.17)",
        "openjdk",
        "11.0.17",
        "bare_upstream_banner",
        None,
        None,
    ),
    (
        "banner",
        "OpenJDK Runtime Environment Temurin-21.0.1+12 (build 21.0.1+12-LTS)",
        "openjdk",
        "21.0.1",
        "bare_upstream_banner",
        None,
        None,
    ),
    (
        "banner",
        "OpenJDK Runtime Environment (build 17.0.9+9-Debian-1deb12u1)",
        "openjdk",
        "17.0.9",
        "distribution_banner",
        "debian",
        None,
    ),
    (
        "banner",
        "OpenJDK Runtime Environment (build 1.8.0_392-8u392-ga-1~deb11u1-b08)",
        "openjdk",
        "1.8.0_392",
        "distribution_banner",
        "debian",
        "11",
    ),
    (
        "banner",
        "OpenJDK Runtime Environment (build 11.0.21+9-post-Ubuntu-0ubuntu122.04)",
        "openjdk",
        "11.0.21",
        "distribution_banner",
        "ubuntu",
        None,
    ),
    (
        "banner",
        "OpenJDK Runtime Environment (Red_Hat-17.0.9.0.9-1) (build 17.0.9+9-LTS)",
        "openjdk",
        "17.0.9",
        "distribution_banner",
        "rhel",
        None,
    ),
    (
        "banner",
        "OpenJDK Runtime Environment Corretto-17.0.9.8.1 (build 17.0.9+8-LTS)",
        "openjdk",
        "17.0.9",
        "bare_upstream_banner",
        None,
        None,
    ),
    ("cpe", "cpe:/a:oracle:jdk:1.8.0_392", "openjdk", "1.8.0_392", "bare_upstream_banner", None, None),
    ("cpe", "cpe:/a:oracle:openjdk:17.0.9", "openjdk", "17.0.9", "bare_upstream_banner", None, None),
    ("cpe", "cpe:/a:oracle:jre:1.7.0_80", "openjdk", "1.7.0_80", "bare_upstream_banner", None, None),
    ("cpe", "cpe:/a:eclipse:temurin:21.0.5+11", "openjdk", "21.0.5", "bare_upstream_banner", None, None),
    # Only the specification version ("1.8"), not the update: not read as 8u0.
    (
        "banner",
        "X-Powered-By: Servlet/4.0 JSP/2.3 (GlassFish Server Open Source Edition  5.1.0  Java/Oracle Corporation/1.8)",
        None,
        None,
        "none",
        None,
        None,
    ),
    ("banner", "Server: AcmeMedical-Gateway/3.1", None, None, "none", None, None),
    ("nmap", "Sectra PACS|24.1|", None, None, "none", None, None),
]


def _identify(via: str, text: str) -> dict[str, object]:
    if via == "banner":
        ident = identify_service(DATA, product=None, version=None, extrainfo=None, cpes=(), banner=text)
    elif via == "cpe":
        ident = identify_service(DATA, product=None, version=None, extrainfo=None, cpes=(text,), banner=None)
    else:
        product, version, extrainfo = [*text.split("|"), "", ""][:3]
        ident = identify_service(
            DATA, product=product, version=version or None, extrainfo=extrainfo or None, cpes=(), banner=None
        )
    return identification_facts(ident, DATA)


def test_there_are_at_least_forty_real_banners() -> None:
    assert len({(v, t) for v, t, *_ in BANNERS}) >= 40


@pytest.mark.parametrize(("via", "text", "product", "version", "evidence", "distro", "release"), BANNERS)
def test_banner_is_recognised(
    via: str,
    text: str,
    product: str | None,
    version: str | None,
    evidence: str,
    distro: str | None,
    release: str | None,
) -> None:
    facts = _identify(via, text)
    assert facts["patch.product_id"] == product
    assert facts["patch.version"] == version
    assert facts["patch.evidence"] == evidence
    assert facts["patch.distro"] == distro
    assert facts["patch.distro_release"] == release
    if product is None or version is None:
        assert facts["patch.unidentified_reason"], "an unknown product or version must say why"


@pytest.mark.parametrize(
    ("scheme", "older", "newer"),
    [
        ("openssh", "7.4", "7.4p1"),
        ("openssh", "7.4p1", "7.9p1"),
        ("openssh", "8.9p1", "9.0p1"),
        ("openssh", "9.6p1", "9.10p1"),
        ("openssh", "1:8.9p1", "9.2p1"),
        ("openssl", "1.0.2k", "1.0.2u"),
        ("openssl", "1.1.1", "1.1.1a"),
        ("openssl", "1.1.1z", "1.1.1za"),
        ("openssl", "1.1.1w", "3.0.0"),
        ("openssl", "3.0.9", "3.0.13"),
        ("dotted", "1.9.9", "1.10.0"),
        ("dotted", "2.4.9", "2.4.57"),
        ("dotted", "1.0rc1", "1.0"),
        ("dotted", "5.7.33-0ubuntu0.18.04.1", "5.7.44"),
        ("dotted", "2.4.57 (Debian)", "2.4.62"),
        ("dotted", "v20.11.0", "20.11.1"),
        ("build", "15.0.2000.5", "15.0.4460.4"),
        ("build", "10.0.17763", "10.0.20348"),
        ("named", "22.04", "24.04"),
        ("java", "1.8.0_392", "8u402-b06"),
        ("java", "11.0.21+9", "11.0.32.1+1"),
    ],
)
def test_scheme_orders_versions(scheme: str, older: str, newer: str) -> None:
    s = scheme_for(scheme)
    assert s.compare(older, newer) == -1
    assert s.compare(newer, older) == 1
    assert s.compare(older, older) == 0


@pytest.mark.parametrize(
    ("scheme", "a", "b"),
    [("dotted", "1.2", "1.2.0"), ("openssh", "8.9", "8.9p0"), ("build", "15.00.4153.00", "15.0.4153.0")],
)
def test_equal_spellings(scheme: str, a: str, b: str) -> None:
    assert scheme_for(scheme).compare(a, b) == 0


@pytest.mark.parametrize(
    ("scheme", "text"), [("dotted", "abc"), ("openssh", "OpenSSH"), ("openssl", "3"), ("build", "")]
)
def test_not_a_version(scheme: str, text: str) -> None:
    with pytest.raises(VersionParseError):
        scheme_for(scheme).parse(text)


@pytest.mark.parametrize(
    ("product", "version", "cycle"),
    [
        ("nginx", "1.24.0", "1.24"),
        ("openssh", "8.9p1", "8"),
        ("openssl", "1.1.1o", "1.1.1"),
        ("tomcat", "8.5.83", "8.5"),
        ("tomcat", "9.0.65", "9"),
        ("postgresql", "9.6.24", "9.6"),
        ("postgresql", "16.3", "16"),
        ("mssql", "15.0.4460.4", "15.0"),
        ("mssql", "2019", "15.0"),
        ("windows-server", "2012 R2", "2012-r2"),
        ("windows-server", "10.0.17763", "2019"),
        ("debian", "bookworm", "12"),
        ("ubuntu", "22.04.4", "22.04"),
        ("openjdk", "1.8.0_392", "8"),
        ("openjdk", "21.0.1+12-LTS", "21"),
        ("nginx", "2.0.1", None),
    ],
)
def test_cycle_of_version(product: str, version: str, cycle: str | None) -> None:
    found = DATA.cycle_for(DATA.products[product], version)
    assert (found.cycle if found else None) == cycle


def test_shipped_data_is_complete_and_sourced() -> None:
    f = DATA.file
    assert DATA.path == packaged_data_path()
    wanted = {"openssh", "openssl", "nginx", "apache-httpd", "iis", "tomcat", "postgresql", "mysql", "mariadb"}
    wanted |= {"mssql", "windows-server", "ubuntu", "debian", "rhel", "php", "nodejs", "samba", "openjdk"}
    assert wanted <= set(DATA.products)
    sources = {s.id: s for s in f.sources}
    for p in f.products:
        assert p.source in sources and sources[p.source].retrieved <= dt.date.today()
        assert p.as_of <= f.generated


def test_bad_data_file_names_file_and_line(tmp_path: Path) -> None:
    text = packaged_data_path().read_text().replace("scheme: openssl", "scheme: roman", 1)
    bad = tmp_path / "versions.yaml"
    bad.write_text(text)
    with pytest.raises(InputError) as info:
        load_version_data(bad)
    problem = info.value.problems[0]
    assert problem.file == bad and problem.line is not None
    assert "unknown version scheme 'roman'" in problem.message


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "versions.yaml"
    bad.write_text("schema_version: 1\nproducts: [\n  {id: x\n")
    with pytest.raises(InputError) as info:
        load_version_data(bad)
    assert info.value.problems[0].line is not None


def test_a_server_header_nmap_left_whole_in_its_product_field_is_read() -> None:
    """nmap -sV on a server with only DHE-1024 suites reported product 'nginx/1.22.1' and no version (region bench):
    300 PAT/EXP findings were 'not in the version data'. The text is the Server header: read it as a banner."""
    data = load_version_data(None)
    ident = identify_service(data, product="nginx/1.22.1", version=None, extrainfo=None, cpes=[], banner=None)
    assert ident.product is not None and ident.product.id == "nginx" and ident.version == "1.22.1"
    unknown = identify_service(data, product="acme-widget/3.1", version=None, extrainfo=None, cpes=[], banner=None)
    assert unknown.product is None and unknown.reason is not None and "not in hcscan's version data" in unknown.reason
