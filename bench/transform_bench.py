"""SMEV transform throughput on one core: ``python -m bench.transform_bench [--seconds N]``.

Transforms a ~1.5 KB SenderProvidedRequestData-like element, as it stands
inside its SOAP envelope, beside lxml's own exclusive c14n of the same element
(libxml2 in C, the floor a Python serializer is measured against).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import click
from lxml import etree

from broker.xml.smev_transform import transform

TYPES = "urn://x-artefacts-smev-gov-ru/services/message-exchange/types/1.2"
ENVELOPE = f"""<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:ns="urn://x-artefacts-smev-gov-ru/services/message-exchange/1.2"
  xmlns:t="{TYPES}" xmlns:b="urn://x-artefacts-smev-gov-ru/services/message-exchange/types/basic/1.2">
 <soap:Body><ns:SendRequestRequest>
  <t:SenderProvidedRequestData Id="SIGNED_BY_CALLER">
   <t:MessageID>6f1c2a80-3c08-11ef-95e2-d4c9eff07b77</t:MessageID>
   <t:TransactionCode>EJX-2024-000123</t:TransactionCode>
   <b:MessagePrimaryContent>
    <g:GradeReport xmlns:g="urn://ejx/grades/1.0" xmlns:p="urn://ejx/person/1.0" Id="R1">
     <g:School code="770123" region="77">ГБОУ Школа № 1234 &amp; лицей</g:School>
     <g:Period from="2024-09-01" to="2024-12-28">I полугодие</g:Period>
     <g:Pupil p:snils="123-456-789 01">
      <p:FamilyName>Иванова</p:FamilyName><p:FirstName>Мария</p:FirstName>
      <p:Patronymic>Петровна</p:Patronymic><p:BirthDate>2012-04-17</p:BirthDate>
     </g:Pupil>
     <g:Marks>
      <g:Mark subject="MATH" date="2024-10-01" weight="1">5</g:Mark>
      <g:Mark subject="RUS" date="2024-10-02" weight="2">4</g:Mark>
      <g:Mark subject="PHYS" date="2024-10-03" weight="1">5</g:Mark>
      <g:Mark subject="HIST" date="2024-10-04" weight="1">3</g:Mark>
      <g:Mark subject="BIO" date="2024-10-07" weight="1">4</g:Mark>
     </g:Marks>
     <g:Comment>Итоговые оценки &lt;предварительные&gt;</g:Comment>
     <g:Empty/>
    </g:GradeReport>
   </b:MessagePrimaryContent>
   <t:TestMessage/>
  </t:SenderProvidedRequestData>
 </ns:SendRequestRequest></soap:Body>
</soap:Envelope>""".encode()


def rate(run: Callable[[], object], seconds: float) -> float:
    """Calls per CPU second of ``run``, in batches of 100: CPU time, as the cores here are shared."""
    calls, start = 0, time.process_time()
    while (elapsed := time.process_time() - start) < seconds:
        for _ in range(100):
            run()
        calls += 100
    return calls / elapsed


@click.command()
@click.option("--seconds", default=2.0, show_default=True, help="CPU time per measurement.")
def main(seconds: float) -> None:
    element = etree.fromstring(ENVELOPE).find(f".//{{{TYPES}}}SenderProvidedRequestData")
    size = len(etree.tostring(element, method="c14n", exclusive=True))
    ours = rate(lambda: transform(element), seconds)
    c14n = rate(lambda: etree.tostring(element, method="c14n", exclusive=True), seconds)
    print(f"element: {size} bytes after exc-c14n, {len(transform(element))} after the SMEV transform")
    print(f"smev transform {ours:10,.0f}/s")
    print(f"lxml exc-c14n  {c14n:10,.0f}/s")
    print(f"transform / c14n: {ours / c14n:.2f}")


if __name__ == "__main__":
    main()
