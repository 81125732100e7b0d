-- Open edX history tables as edx-platform creates them (a fresh install's DDL, column order and index names).
-- One deliberate change: every table here is utf8mb4, where edX creates utf8 (utf8mb3). Installs that were
-- converted to utf8mb4 look like this, and only utf8mb4 can hold the 4-byte UTF-8 (emoji, rare CJK) the
-- generated data carries; a utf8mb3 column would reject it. Tests that need another charset ALTER it.
-- The harness runs one section at a time; a section starts with a "-- name: <section>" line.

-- name: databases
CREATE DATABASE IF NOT EXISTS edxapp DEFAULT CHARACTER SET utf8mb4;
CREATE DATABASE IF NOT EXISTS edxapp_csmh DEFAULT CHARACTER SET utf8mb4;

-- name: source
-- Current CSMH (courseware_studentmodulehistory), in the default database.
CREATE TABLE edxapp.courseware_studentmodulehistory (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `version` varchar(255) DEFAULT NULL,
  `created` datetime(6) NOT NULL,
  `state` longtext,
  `grade` double DEFAULT NULL,
  `max_grade` double DEFAULT NULL,
  `student_module_id` int(11) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `courseware_studentmo_student_module_id_6efc64cf_fk_coursewar` (`student_module_id`),
  KEY `courseware_studentmodulehistory_version_d3823ad1` (`version`),
  KEY `courseware_studentmodulehistory_created_19cb94d2` (`created`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- name: target
-- Current CSMHE: id is the 6th column, student_module_id is bigint unsigned.
CREATE TABLE edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended (
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
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- name: target2016
-- 2016-era CSMHE (Eucalyptus upgrade), still found on long-lived installs: created has no fractional
-- seconds and student_module_id is int(11); otherwise the same as the current table.
CREATE TABLE edxapp_csmh.coursewarehistoryextended_studentmodulehistoryextended (
  `version` varchar(255) DEFAULT NULL,
  `created` datetime NOT NULL,
  `state` longtext,
  `grade` double DEFAULT NULL,
  `max_grade` double DEFAULT NULL,
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `student_module_id` int(11) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `coursewarehistoryextended_s_version_d66288c3` (`version`),
  KEY `coursewarehistoryextended_s_created_2cf0c3be` (`created`),
  KEY `student_module_idx` (`student_module_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
