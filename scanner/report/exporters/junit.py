"""JUnit XML export: one testsuite per system, one testcase per finding (fail → failure, error → error)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict

from scanner.report.exporters.base import Exporter, ExportInput
from scanner.store.queries import FindingView

# Characters XML 1.0 cannot carry at all (a banner may contain them): replaced, never written raw.
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


class JunitExporter(Exporter):
    media_type = "application/xml"

    def export(self, data: ExportInput) -> str:
        by_system: dict[str, list[FindingView]] = defaultdict(list)
        for f in data.findings:
            by_system[f"{f.region_id}.{f.system_id}"].append(f)
        root = ET.Element("testsuites", name="hcscan", timestamp=data.generated_at.isoformat())
        totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for suite_name, items in sorted(by_system.items()):
            suite = ET.SubElement(root, "testsuite", name=suite_name)
            counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
            for f in items:
                counts["tests"] += 1
                case = ET.SubElement(
                    suite, "testcase", classname=suite_name, name=_x(f"{f.control_id} {f.endpoint_key}")
                )
                c = data.controls.get(f.control_id)
                if f.status == "fail":
                    counts["failures"] += 1
                    el = ET.SubElement(case, "failure", message=_x(f.message), type=f.severity)
                    el.text = _x(c.remediation) if c else ""
                elif f.status == "error":
                    counts["errors"] += 1
                    ET.SubElement(case, "error", message=_x(f.message), type="could-not-assess")
                elif f.status in ("waived", "not_applicable"):
                    counts["skipped"] += 1
                    ET.SubElement(case, "skipped", message=_x(f.message))
            for k, v in counts.items():
                suite.set(k, str(v))
                totals[k] += v
        for k, v in totals.items():
            root.set(k, str(v))
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
