"""The reference flow, as an institution integrating in Python would run it.

Generated from proto/ with grpcio-tools, talking to `passerelle up`:
referral -> diagnosis -> consent -> entry -> exit -> indicators.

Usage: reference_flow.py GENERATED_DIR PASSERELLE_BINARY DATA_DIR
"""

import hashlib
import subprocess
import sys
import time
import uuid

import grpc

sys.path.insert(0, sys.argv[1])
from passerelle.v1 import boundary_pb2, casework_pb2, emploi_pb2, emploi_pb2_grpc  # noqa: E402
from passerelle.v1 import casework_requests_pb2 as requests_pb2  # noqa: E402
from passerelle.v1 import pilotage_pb2, pilotage_pb2_grpc, social_pb2_grpc  # noqa: E402

PASSERELLE, DATA_DIR = sys.argv[2], sys.argv[3]


def token(institution, role, subject):
    return subprocess.check_output(
        [PASSERELLE, "token", "--institution", institution, "--role", role, "--subject", subject, "--data-dir", DATA_DIR],
        text=True,
    ).strip()


def auth(tok):
    return [("authorization", f"Bearer {tok}")]


def until(what, call, check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = call()
            if check(answer):
                return answer
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def main():
    social = social_pb2_grpc.SocialServiceStub(grpc.insecure_channel("127.0.0.1:50052"))
    emploi = emploi_pb2_grpc.EmploiServiceStub(grpc.insecure_channel("127.0.0.1:50051"))
    pilotage = pilotage_pb2_grpc.PilotageServiceStub(grpc.insecure_channel("127.0.0.1:50053"))
    social_worker = auth(token("social", "social_worker", "sw-python-1"))
    counsellor = auth(token("emploi", "counsellor", "ft-python-1"))
    steering = auth(token("pilotage", "steering", "copil-python"))
    coordinator = auth(token("emploi", "coordinator", "coordination-python"))
    run = str(int(time.time() * 1000))

    consent = casework_pb2.ConsentRecord(
        purposes=[boundary_pb2.PURPOSE_REFERRAL, boundary_pb2.PURPOSE_GLOBAL_SUPPORT],
        recipients=[boundary_pb2.INSTITUTION_EMPLOI, boundary_pb2.INSTITUTION_SOCIAL],
        categories=[boundary_pb2.DATA_CATEGORY_IDENTITY, boundary_pb2.DATA_CATEGORY_CASE, boundary_pb2.DATA_CATEGORY_BARRIER],
        evidence=casework_pb2.ConsentEvidence(
            kind=casework_pb2.EVIDENCE_KIND_SIGNED_REFERRAL_FORM,
            document_sha256=hashlib.sha256(b"fiche de liaison").hexdigest(),
            collected_by="sw-python-1",
        ),
    )
    now = time.time()
    consent.evidence.signed_at.FromSeconds(int(now) - 60)
    consent.valid_from.FromSeconds(int(now) - 60)
    consent.valid_until.FromSeconds(int(now) + 365 * 86400)
    recorded = social.RecordConsent(
        requests_pb2.RecordConsentRequest(idempotency_key=f"py-consent-{run}", consent=consent), metadata=social_worker
    ).consent
    case_id = recorded.case_id

    referral = casework_pb2.Referral(
        case_id=case_id,
        consent_id=recorded.consent_id,
        office_code="AD-RENNES",
        # Ille-et-Vilaine's preconditions, all met.
        checks=[
            casework_pb2.CheckAnswer(code=code, met=True)
            for code in ("lack_of_autonomy", "wants_to_work", "hard_to_project")
        ],
        person=casework_pb2.PersonIdentity(first_name="Anaïs", last_name="Le Bihan", birth_date="1991-05-17"),
        barriers=[casework_pb2.Barrier(category=casework_pb2.BARRIER_CATEGORY_HOUSING, level=casework_pb2.BARRIER_LEVEL_HIGH)],
    )
    social.CreateReferral(
        requests_pb2.CreateReferralRequest(idempotency_key=f"py-referral-{run}", referral=referral, local_note="note locale"),
        metadata=social_worker,
    )
    seen = until(
        "the referral at the employment side",
        lambda: emploi.GetCase(requests_pb2.GetCaseRequest(case_id=case_id), metadata=counsellor),
        lambda answer: answer.referral.person.first_name == "Anaïs",
    )
    assert not seen.local_notes, "a local note crossed the boundary"
    assert seen.case.referral_state == casework_pb2.REFERRAL_STATE_PENDING
    emploi.DecideReferral(
        requests_pb2.DecideReferralRequest(
            idempotency_key=f"py-accept-{run}", case_id=case_id, decision=casework_pb2.REFERRAL_STATE_ACCEPTED
        ),
        metadata=counsellor,
    )

    half = casework_pb2.DiagnosisHalf(case_id=case_id, barriers=referral.barriers, verdict=casework_pb2.VERDICT_AGREE)
    emploi.RecordDiagnosis(requests_pb2.RecordDiagnosisRequest(idempotency_key=f"py-de-{run}", half=half), metadata=counsellor)
    social.RecordDiagnosis(requests_pb2.RecordDiagnosisRequest(idempotency_key=f"py-ds-{run}", half=half), metadata=social_worker)
    until(
        "both halves at the employment side",
        lambda: emploi.GetCase(requests_pb2.GetCaseRequest(case_id=case_id), metadata=counsellor),
        lambda answer: answer.case.state == casework_pb2.CASE_STATE_DIAGNOSED,
    )

    # The working-time register bounds the counsellor's portfolio.
    register = emploi.RegisterCounsellor(
        emploi_pb2.RegisterCounsellorRequest(
            idempotency_key=f"py-register-{run}", counsellor="ft-python-1", working_time_per_mille=1000, office_code="PE-RENNES"
        ),
        metadata=coordinator,
    )
    assert register.max_portfolio == 100, register
    contract = casework_pb2.ConsentEvidence(
        kind=casework_pb2.EVIDENCE_KIND_SIGNED_CONTRACT,
        document_sha256=hashlib.sha256(b"contrat").hexdigest(),
        collected_by="ft-python-1",
    )
    contract.signed_at.FromSeconds(int(now))
    entry = casework_pb2.CaseEntry(
        pair=casework_pb2.Pair(counsellor="ft-python-1", social_worker="sw-python-1"),
        track=casework_pb2.TRACK_GLOBAL,
        evidence=[contract],
    )
    entered = emploi.SignContract(emploi_pb2.SignContractRequest(idempotency_key=f"py-sign-{run}", case_id=case_id, entry=entry), metadata=counsellor)
    assert entered.case.state == casework_pb2.CASE_STATE_ACTIVE
    assert entered.case.referent == casework_pb2.REFERENT_COUNSELLOR
    exited = emploi.ExitCase(
        emploi_pb2.ExitCaseRequest(idempotency_key=f"py-exit-{run}", case_id=case_id, exit=casework_pb2.CaseExit(reason=casework_pb2.EXIT_REASON_TRAINING)),
        metadata=counsellor,
    )
    assert exited.case.exit_reason == casework_pb2.EXIT_REASON_TRAINING

    dashboard = pilotage.GetDashboard(pilotage_pb2.GetDashboardRequest(), metadata=steering).dashboard
    assert dashboard.min_cell_size == 11
    assert all(source.fresh for source in dashboard.sources) and len(dashboard.sources) == 2
    # One person is below the secrecy threshold: the cell is masked, not shown.
    assert dashboard.entries.suppressed and dashboard.entries.count == 0

    # On the France Travail pilot's offices a person is first oriented into a
    # parcours, by the side that decides: the Département for an RSA beneficiary.
    grid = [
        casework_pb2.CriterionAnswer(criterion=criterion, answer=answer)
        for criterion, answer in (
            ("employment_situation", "long_job_search"),
            ("qualification", "isced_3_4"),
            ("aspirations", "project_to_build"),
            ("health", "none"),
            ("housing", "manageable"),
            ("mobility", "manageable"),
            ("childcare", "none"),
            ("caring_for_relative", "none"),
            ("other_difficulty", "none"),
        )
    ]
    orientation = casework_pb2.Orientation(
        case_id=str(uuid.uuid4()),
        office_code="AD-REDON-VALLONS",
        parcours=casework_pb2.PARCOURS_SOCIO_PROFESSIONNEL,
        referent=casework_pb2.ORGANISME_REFERENT_FRANCE_TRAVAIL,
        rsa_beneficiary=True,
    )
    try:
        emploi.RecordOrientation(
            requests_pb2.RecordOrientationRequest(idempotency_key=f"py-orient-ft-{run}", orientation=orientation, criteria=grid),
            metadata=counsellor,
        )
        raise SystemExit("France Travail oriented an RSA beneficiary")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error
    oriented = social.RecordOrientation(
        requests_pb2.RecordOrientationRequest(idempotency_key=f"py-orient-{run}", orientation=orientation, criteria=grid),
        metadata=social_worker,
    ).orientation
    assert oriented.orientation.decided_by == "sw-python-1", oriented
    assert len(oriented.criteria) == len(grid)

    try:
        social.GetCase(requests_pb2.GetCaseRequest(case_id=case_id), metadata=counsellor)
        raise SystemExit("a counsellor's token was accepted by the social service")
    except grpc.RpcError as error:
        assert error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), error.code()

    print(f"python reference flow: ok (case {case_id})")


if __name__ == "__main__":
    main()
