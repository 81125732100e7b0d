-- Target server of the compose sandbox: edX's CSMHE as a fresh install creates it (from shared/edx-schema.sql)
-- and the privileges csmh-sync needs there. Run once by the mariadb image on an empty data directory, as root;
-- the user 'csmh'@'%' already exists (MARIADB_USER / MARIADB_PASSWORD_FILE).

CREATE DATABASE IF NOT EXISTS edxapp_csmh DEFAULT CHARACTER SET utf8;

-- edX creates CSMHE with AUTO_INCREMENT = max(CSMH.id) + STUDENTMODULEHISTORYEXTENDED_OFFSET (default 10000).
-- source.sql writes ids 1..100000. The sandbox uses an offset of 2,000,000 instead of 10,000, as the runbook
-- advises: the gap is the id runway for rows still written to CSMH during the migration window.
CREATE TABLE IF NOT EXISTS edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended (
  `version` varchar(255) DEFAULT NULL,
  `created` datetime(6) NOT NULL,
  `state` longtext,
  `grade` double DEFAULT NULL,
  `max_grade` double DEFAULT NULL,
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `student_module_id` bigint(20) unsigned NOT NULL,
  PRIMARY KEY (`id`),
  KEY `coursewarehistoryextended_s_version_d66288c3` (`version`),
  KEY `coursewarehistoryextended_s_created_2cf0c3be` (`created`),
  KEY `student_module_idx` (`student_module_id`)
) ENGINE=InnoDB AUTO_INCREMENT=2100000 DEFAULT CHARSET=utf8;

-- csmh-sync writes the copied rows and keeps its checkpoint tables (csmh_sync_state, csmh_sync_backfill)
-- beside CSMHE, committed in the same transactions. ALTER is for `cutover --bump-auto-increment`.
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER ON edxapp_csmh.* TO 'csmh'@'%';
